"""The recipe's typed schema: value readers (`fields`), `TrainingArgs`, `PipelineConfig`, the normalised
`Recipe`, and the field-definition API methods use to declare their config slice (`params`).

It imports nothing from `fvjax.recipe` (the YAML loader) or `fvjax.methods`, so method plug-ins can import
it without a cycle."""
