"""The listingrva provider plugin: request models, client, plugin and sandbox."""
