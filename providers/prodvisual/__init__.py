"""The prodvisual provider plugin: request models, client, plugin and sandbox."""
