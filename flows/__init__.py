"""The catalog pipeline: catalog input, run parameters, limits, tasks, archive, costs and the flow."""
