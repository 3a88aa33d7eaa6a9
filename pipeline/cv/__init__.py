"""`seqfer cv`: subject-independent k-fold cross-validation on Ray actors, and its reports."""
