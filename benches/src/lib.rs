//! Swarmcast benchmarks: criterion micro benchmarks in benches/, macro benchmarks in scripts/.
