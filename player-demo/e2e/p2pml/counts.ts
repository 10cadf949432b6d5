// What the p2p-media-loader test page counts (window.p2pml), read by the
// browser test.
export interface Counts {
  httpBytes: number;
  p2pBytes: number;
  uploadedBytes: number;
  peersConnected: number;
  peersOpen: number;
  errors: string[];
  currentTime: number;
}
