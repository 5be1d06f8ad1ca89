package main

import (
	"fmt"
	"strings"
)

// The help texts. docs/cli.md says the same at more length; keep them in step.

// searchPathHelp is shown by every command that reads a config file.
const searchPathHelp = `Without -config, the config file is:
  $SLUICE_CONFIG            when the variable is set (and then only it)
  otherwise the first that exists of
    /etc/sluice/config.yaml   the production path (the container image's too)
    ./config.yaml             in the working directory
    ./config.example.yaml     the demo config of a checkout, last
When none exists, the error names every path tried.
`

var cmdRun = &command{
	name:     "run",
	summary:  "run the gateway; the default command",
	synopsis: "sluice [run] [-config FILE]",
	define:   defineRun,
	help: `Run the gateway: the proxy on server.listen, the admin API (/metrics,
/healthz, /readyz, /admin/...) on admin.listen. "run" may be left out:
"sluice -config FILE" is the same command.

Signals:
  SIGHUP          re-read the config file; a config with problems is rejected,
                  logged and counted, and the running one keeps serving
  SIGTERM/SIGINT  stop accepting, /readyz answers 503, in-flight requests
                  finish (at most server.drain_timeout), exit 0; a second
                  signal exits at once with code 1

Flags:
  -config FILE, -c FILE   the config file (see below)

` + searchPathHelp + `
Any key can be overridden from the environment: SLUICE_ + the key path in
upper case with "__" between levels (SLUICE_SERVER__LISTEN=0.0.0.0:8080 sets
server.listen). Secrets go in the file as "${VAR}" or "file:/path".

Exit status: 0 after a drain, 1 when the config does not load or a listener
cannot start.

Examples:
  sluice -config /etc/sluice/config.yaml
  sluice run -config config.example.yaml
  SLUICE_CONFIG=/srv/sluice.yaml sluice
  SLUICE_LOG__LEVEL=debug sluice -c config.yaml
`,
}

var cmdValidate = &command{
	name:     "validate",
	summary:  "check a config file; list every problem with its key path",
	synopsis: "sluice validate [-config FILE]",
	define:   defineValidate,
	help: `Check a config file the way the gateway would load it (environment overrides,
"${VAR}" and "file:" secrets, every plugin block) without starting anything.
Prints "FILE: OK" on stdout, or every problem with its key path on stderr.
Run it before a reload: a config the gateway would reject fails here too.

Flags:
  -config FILE, -c FILE   the config file (see below)

` + searchPathHelp + `
Exit status: 0 when the config is valid, 1 when it has problems or cannot be
read.

Examples:
  sluice validate -config /etc/sluice/config.yaml
  sluice validate -c config.yaml && systemctl reload sluice
  SLUICE_ADMIN__LISTEN=0.0.0.0:9090 sluice validate -config config.example.yaml
`,
}

var cmdHealthcheck = &command{
	name:     "healthcheck",
	summary:  "exit 0 if the running gateway's /readyz answers 200",
	synopsis: "sluice healthcheck [-config FILE | -url URL] [-timeout DURATION]",
	define:   defineHealthcheck,
	help: `Ask a running gateway whether it is ready: GET http://ADMIN/readyz, where
ADMIN is admin.listen of the config file (environment overrides such as
SLUICE_ADMIN__LISTEN apply). Meant for container health checks in images
without a shell or curl (the distroless image): Docker's HEALTHCHECK, compose's
healthcheck. It reads the config only; it starts nothing and needs no admin
token (/readyz is public).

A listen address on every interface (0.0.0.0:9090, [::]:9090, :9090) is
checked on 127.0.0.1. /readyz answers 503 while the gateway starts and while
it drains. A config with problems elsewhere than admin.listen is still used
(the gateway keeps serving its previous config after a rejected reload); a
note on stderr says so.

Flags:
  -config FILE, -c FILE   read admin.listen from this config file (see below)
  -url URL                check this URL instead; no config is read.
                          http(s)://HOST:PORT[/PATH]; without a path, /readyz
  -timeout DURATION       give up after this long (default 2s)

` + searchPathHelp + `
Exit status: 0 when the answer is 200 (one line on stdout); 1 otherwise, with
one line on stderr: the status and the first line of the body, or why there
was no answer (the address tried is in it); 2 for a bad command line.

Examples:
  sluice healthcheck -config /etc/sluice/config.yaml
  sluice healthcheck -url http://127.0.0.1:9090
  sluice healthcheck -url http://127.0.0.1:9090/healthz -timeout 5s
  HEALTHCHECK CMD ["/usr/local/bin/sluice", "healthcheck", "-config", "/etc/sluice/config.yaml"]
`,
}

var cmdConfigSchema = &command{
	name:     "config schema",
	summary:  "print the JSON Schema of the config file",
	synopsis: "sluice config schema",
	define:   defineConfigSchema,
	help: `Print the JSON Schema of the config file on stdout: every key with its type,
default and description. Editors use it to complete and check config.yaml
(the YAML language server reads a "# yaml-language-server: $schema=FILE"
comment at the top of the file).

Exit status: 0, or 1 if the schema cannot be produced.

Examples:
  sluice config schema > sluice.schema.json
  sluice config schema | jq '.properties | keys'
`,
}

var cmdVersion = &command{
	name:     "version",
	summary:  "print the version (also --version, -version, -v, -V)",
	synopsis: "sluice version",
	define:   defineVersion,
	help: `Print the version. The first line is always "sluice VERSION", for scripts;
the next lines show the commit (when the build recorded one), the Go version
and the platform. "sluice --version", "sluice -version", "sluice -v" and
"sluice -V" print the same.

The version is set at build time with -ldflags "-X main.version=v1.2.3"; a
"go install ...@v1.2.3" build reports its module version; otherwise "dev".

Examples:
  sluice version
  sluice --version | head -n 1 | cut -d' ' -f2
`,
}

var cmdHelp = &command{
	name:     "help",
	summary:  "show the help of a command (also COMMAND --help)",
	synopsis: "sluice help [COMMAND]",
	define:   defineHelp,
	help: `Show the overview, or the description, flags and examples of a command.
"sluice COMMAND --help" (or -h) shows the same. Help goes to stdout and exits 0.

Examples:
  sluice help
  sluice help healthcheck
  sluice help config schema
  sluice validate --help
`,
}

const configGroupHelp = `usage: sluice config COMMAND

Commands about the config file format:
  schema    print the JSON Schema of the config file

Run 'sluice help config schema' for its details.
`

// overview is the help of "sluice" itself: every command, in one screen.
func overview() string {
	var b strings.Builder
	b.WriteString("Sluice, an API gateway for outbound integrations.\n\n")
	b.WriteString("usage: sluice [COMMAND] [FLAGS]\n\nCommands:\n")
	for _, cmd := range commands {
		fmt.Fprintf(&b, "  %-15s%s\n", cmd.name, cmd.summary)
	}
	b.WriteString("\n" + searchPathHelp + `
Any config key can be overridden from the environment: SLUICE_SERVER__LISTEN=:9000
sets server.listen. SIGHUP reloads the config; SIGTERM/SIGINT drain in-flight
requests and exit 0.

Exit status: 0 success, 1 failure, 2 a command line error.

Examples:
  sluice -config /etc/sluice/config.yaml
  sluice validate -config config.yaml
  sluice healthcheck -config /etc/sluice/config.yaml
  sluice --version

Run 'sluice help COMMAND' (or 'sluice COMMAND --help') for a command's flags and
examples. Full reference: docs/cli.md.
`)
	return b.String()
}
