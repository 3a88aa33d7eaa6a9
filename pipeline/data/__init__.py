"""What the learning verbs read: the manifest a config names, and the model inputs of its labelled sequences."""
