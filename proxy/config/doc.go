// Package config is the configuration of Sluice as the YAML file states it:
// the schema (config.go), the defaults (defaults.go), loading with
// environment overrides, ${VAR} expansion and strict decoding (load.go),
// the checks that need no plugin (validate.go), and the value types a config
// and a plugin block are made of (Duration, Size, Secret) with the problem
// list every error names its key path in (errors.go).
//
// Plugin blocks and plugin-owned top-level sections stay raw here: each
// plugin decodes and checks its own when proxy compiles the pipeline, with
// DecodeBlock and Problems from this package. This package depends on
// nothing else in Sluice but httpx.
package config
