"""Training one network: the fit loop, checkpoints, prediction and ensembles. Pure torch: no Ray, no run folders."""
