"""`seqfer preprocess`: every manifest sequence through the stages on Ray, into the cache and the run folder.

- :mod:`~pipeline.preprocess.to_stages`: a config's SequenceConfig and a manifest row's SequenceSource (the one
  place each is made; training, CV, prediction and the model folder use them too);
- :mod:`~pipeline.preprocess.run`: the driver (manifest, cache lookup, index, failures, summary);
- :mod:`~pipeline.preprocess.dispatch`: the sequences to do, in batches (small items grouped), on Ray actors;
- :mod:`~pipeline.preprocess.worker`: what runs inside each Ray actor (a batch, and its landmark-table part).
"""
