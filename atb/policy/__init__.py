"""Policy as a signed, versioned artefact: build, sign, publish, serve, roll back (docs/policy.md).

`bundle` builds and reads bundles with the pinned OPA, `keys` holds the signing
key, `publish` the bundle store, `server` the development bundle server,
`opa_config` OPA's configuration, `status` what each OPA instance serves, `cli`
the `atb policy` commands.
"""
