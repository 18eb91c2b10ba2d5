package dispatch

// Prefetch is prefetch, for the external tests that check what a replica
// holds against it.
var Prefetch = prefetch
