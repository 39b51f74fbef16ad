"""rxguard's tools, beside the runtime package `rxguard` and never in the Lambda layer: the
`rxguard` command line (`cli`, one module per subcommand), the moto harness (`offline`: the
template, ASL and handlers on moto), the synthetic population and its evaluation (`synth`)
and the sample letters (`letters_sample`). They import `rxguard`; `rxguard` never imports
them (`.importlinter`: runtime apart from tools). Where each lives: docs/architecture.md."""
