"""`seqfer preprocess`: every manifest sequence through the stages on Ray, into the cache and the run folder."""
