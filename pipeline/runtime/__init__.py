"""How a verb runs: Ray start-up and dispatch, progress and summaries, logging, interrupts, run folders, resume keys."""
