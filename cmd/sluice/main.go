// Command sluice is the Sluice API gateway for outbound integrations.
//
//	sluice [run] [-config FILE]                  run the gateway
//	sluice validate [-config FILE]               check a config, print every problem, exit 1 if any
//	sluice healthcheck [-config FILE | -url URL] exit 0 if the running gateway's /readyz answers 200
//	sluice config schema                         print the JSON Schema of the config file
//	sluice version                               print the version (also --version, -version, -v, -V)
//	sluice help [COMMAND]                        help of a command (also COMMAND --help)
//
// Without -config, the config file is $SLUICE_CONFIG when set, else the first
// that exists of /etc/sluice/config.yaml, ./config.yaml and
// ./config.example.yaml. SIGHUP reloads the config; SIGTERM/SIGINT drain
// in-flight requests, then exit 0. docs/cli.md is the full reference.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/sluice-gw/sluice/plugins"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = ""

// Exit codes: 0 success, 1 failure (a bad config, a gateway that is not
// ready...), 2 a command line that cannot be understood.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr, getenv: os.Getenv, searchPath: defaultSearchPath}
	return c.main(args)
}

// cli is one invocation: where it writes, and what it reads from outside the
// command line (tests replace the environment and the config search path).
type cli struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	searchPath     []string
}

// command is one subcommand. The texts are its help; define declares its
// flags on fs and returns what runs once they are parsed.
type command struct {
	name     string // as typed after "sluice": "validate", "config schema"
	summary  string // one line, for the overview
	synopsis string // the usage line, without "usage: "
	help     string // description, flags and examples
	define   func(fs *flag.FlagSet) action
}

// action runs a command with the arguments left after its flags.
type action func(c *cli, cmd *command, args []string) int

// commands in the order of the overview. "config" is a group: its only
// subcommand is "config schema".
var commands []*command

func init() {
	commands = []*command{cmdRun, cmdValidate, cmdHealthcheck, cmdConfigSchema, cmdVersion, cmdHelp}
}

func lookup(name string) *command {
	for _, cmd := range commands {
		if cmd.name == name {
			return cmd
		}
	}
	return nil
}

// topNames are the words that may follow "sluice", for suggestions.
func topNames() []string {
	var names []string
	for _, cmd := range commands {
		first, _, _ := strings.Cut(cmd.name, " ")
		if !slices.Contains(names, first) {
			names = append(names, first)
		}
	}
	slices.Sort(names)
	return names
}

// isHelpFlag: Go's flag package takes -h, -help and their "--" forms for help.
func isHelpFlag(a string) bool {
	return a == "-h" || a == "-help" || a == "--help" || a == "--h"
}

// isVersionFlag: the spellings of peers (--version, -version, -v, -V). They
// are recognized as the first argument only.
func isVersionFlag(a string) bool {
	return a == "-v" || a == "-V" || a == "-version" || a == "--version"
}

func (c *cli) main(args []string) int {
	if len(args) == 0 {
		return c.exec(cmdRun, nil)
	}
	switch a := args[0]; {
	case isHelpFlag(a):
		return c.help(args[1:])
	case isVersionFlag(a):
		return c.exec(cmdVersion, args[1:])
	case strings.HasPrefix(a, "-"):
		// Flags first: "sluice -config FILE" runs the gateway.
		return c.exec(cmdRun, args)
	case a == "config":
		return c.configGroup(args[1:])
	}
	if cmd := lookup(args[0]); cmd != nil && !strings.Contains(args[0], " ") {
		return c.exec(cmd, args[1:])
	}
	return c.unknownCommand(args[0], topNames(), "sluice")
}

// configGroup dispatches "sluice config SUBCOMMAND".
func (c *cli) configGroup(args []string) int {
	if len(args) == 0 {
		fmt.Fprintf(c.stderr, "sluice: \"sluice config\" needs a subcommand: %s\nRun 'sluice config --help' for usage.\n", cmdConfigSchema.synopsis)
		return exitUsage
	}
	if isHelpFlag(args[0]) {
		fmt.Fprint(c.stdout, configGroupHelp)
		return exitOK
	}
	if cmd := lookup("config " + args[0]); cmd != nil {
		return c.exec(cmd, args[1:])
	}
	return c.unknownCommand("config "+args[0], []string{"config schema"}, "sluice config")
}

func (c *cli) unknownCommand(name string, known []string, parent string) int {
	msg := fmt.Sprintf("unknown command %q", name)
	if strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml") {
		msg += fmt.Sprintf("; to run the gateway on that file: sluice -config %s", name)
	} else {
		msg += config.Suggest(name, known)
	}
	fmt.Fprintf(c.stderr, "sluice: %s\nRun '%s --help' for usage.\n", msg, parent)
	return exitUsage
}

// help prints the overview, or the help of the command named by args.
func (c *cli) help(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(c.stdout, overview())
		return exitOK
	}
	name := strings.Join(args, " ")
	if name == "config" {
		fmt.Fprint(c.stdout, configGroupHelp)
		return exitOK
	}
	if cmd := lookup(name); cmd != nil {
		c.printHelp(cmd)
		return exitOK
	}
	known := topNames()
	if args[0] == "config" {
		known = []string{"config schema"}
	}
	return c.unknownCommand(name, known, "sluice")
}

func (c *cli) printHelp(cmd *command) {
	fmt.Fprintf(c.stdout, "usage: %s\n\n%s", cmd.synopsis, cmd.help)
}

// exec parses the command's flags and runs it. -h/--help anywhere among the
// flags prints its help to stdout and exits 0.
func (c *cli) exec(cmd *command, args []string) int {
	fs := flag.NewFlagSet("sluice "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed below, help by printHelp
	act := cmd.define(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.printHelp(cmd)
			return exitOK
		}
		return c.usageError(cmd, err.Error())
	}
	return act(c, cmd, fs.Args())
}

// usageError prints what is wrong with the command line, the command's usage
// line and where to read more, and returns exit code 2.
func (c *cli) usageError(cmd *command, msg string) int {
	fmt.Fprintf(c.stderr, "sluice %s: %s\nusage: %s\nRun 'sluice %s --help' for details.\n", cmd.name, msg, cmd.synopsis, cmd.name)
	return exitUsage
}

// noArgs is the check of commands that take no positional arguments.
func (c *cli) noArgs(cmd *command, args []string, hint string) bool {
	if len(args) == 0 {
		return true
	}
	msg := fmt.Sprintf("unexpected argument %q", args[0])
	if hint != "" && !strings.HasPrefix(args[0], "-") {
		msg += " " + hint
	}
	c.usageError(cmd, msg)
	return false
}

// configFlag declares -config and its short form -c.
func configFlag(fs *flag.FlagSet) *string {
	p := new(string)
	fs.StringVar(p, "config", "", "config file")
	fs.StringVar(p, "c", "", "config file (short for -config)")
	return p
}

const configArgHint = "(give the config file with -config FILE)"

// ---------------------------------------------------------------------------
// run

func defineRun(fs *flag.FlagSet) action {
	configPath := configFlag(fs)
	return func(c *cli, cmd *command, args []string) int {
		if !c.noArgs(cmd, args, configArgHint) {
			return exitUsage
		}
		path, searched, err := c.configPath(*configPath)
		if err != nil {
			fmt.Fprintln(c.stderr, "sluice:", err)
			return exitFail
		}
		if searched {
			fmt.Fprintf(c.stderr, "sluice: config file %s (found by the search path; -config FILE or SLUICE_CONFIG choose another)\n", path)
		}
		cfg, err := config.Load(path)
		if err != nil {
			fmt.Fprintln(c.stderr, "sluice:", err)
			return exitFail
		}
		err = proxy.Run(context.Background(), cfg, proxy.Options{
			Plugins:    plugins.Registry(),
			ConfigPath: path,
			Version:    getVersion(),
		})
		if err != nil {
			fmt.Fprintln(c.stderr, "sluice:", err)
			return exitFail
		}
		return exitOK
	}
}

// ---------------------------------------------------------------------------
// validate

func defineValidate(fs *flag.FlagSet) action {
	configPath := configFlag(fs)
	return func(c *cli, cmd *command, args []string) int {
		if !c.noArgs(cmd, args, configArgHint) {
			return exitUsage
		}
		path, _, err := c.configPath(*configPath)
		if err != nil {
			fmt.Fprintln(c.stderr, "sluice:", err)
			return exitFail
		}
		cfg, err := config.Load(path)
		return validate(path, cfg, err, c.stdout, c.stderr)
	}
}

// validate prints every problem of the file (schema and plugins) with its key path.
func validate(path string, cfg *config.Config, loadErr error, stdout, stderr io.Writer) int {
	err := proxy.Validate(cfg, loadErr, plugins.Registry())
	var ce *config.ConfigError
	switch {
	case err == nil:
		fmt.Fprintf(stdout, "%s: OK\n", path)
		return exitOK
	case !errors.As(err, &ce):
		fmt.Fprintln(stderr, "sluice:", err)
		return exitFail
	}
	fmt.Fprintf(stderr, "%s: %d problem(s)\n", path, len(ce.Problems))
	for _, p := range ce.Problems {
		fmt.Fprintf(stderr, "  %s\n", p)
	}
	return exitFail
}

// ---------------------------------------------------------------------------
// config schema

func defineConfigSchema(fs *flag.FlagSet) action {
	return func(c *cli, cmd *command, args []string) int {
		if !c.noArgs(cmd, args, "") {
			return exitUsage
		}
		if err := printConfigSchema(c.stdout); err != nil {
			fmt.Fprintln(c.stderr, "sluice config schema:", err)
			return exitFail
		}
		return exitOK
	}
}

// ---------------------------------------------------------------------------
// version

func defineVersion(fs *flag.FlagSet) action {
	return func(c *cli, cmd *command, args []string) int {
		if !c.noArgs(cmd, args, "") {
			return exitUsage
		}
		fmt.Fprint(c.stdout, versionText())
		return exitOK
	}
}

// versionText is "sluice VERSION" on the first line, for scripts, then the
// build's commit (when the build recorded one), Go version and platform.
func versionText() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sluice %s\n", getVersion())
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, when, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = ", modified"
				}
			}
		}
		if rev != "" {
			fmt.Fprintf(&b, "  commit:   %s (%s%s)\n", rev, when, modified)
		}
	}
	fmt.Fprintf(&b, "  go:       %s\n", runtime.Version())
	fmt.Fprintf(&b, "  platform: %s/%s\n", runtime.GOOS, runtime.GOARCH)
	return b.String()
}

func getVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// ---------------------------------------------------------------------------
// help

func defineHelp(fs *flag.FlagSet) action {
	return func(c *cli, _ *command, args []string) int { return c.help(args) }
}
