"""The pixii provider plugin: request models, client, plugin and sandbox."""
