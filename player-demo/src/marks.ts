// User-timing marks of a player's startup ("swarmcast:attach",
// "swarmcast:welcome", "swarmcast:fragment 12 swarm", "swarmcast:fragment 12
// ready", "swarmcast:playing"): DevTools' performance panel shows them and
// the browser benchmark reads them to split startup into its steps. They
// are set only until playback starts, so their number is bounded.

export function startupMark(name: string): void {
  try {
    performance.mark(`swarmcast:${name}`);
  } catch {
    // A page without the User Timing API: no marks.
  }
}
