package agent

// ListChunk is listChunk, for the tests of list pages.
const ListChunk = listChunk
