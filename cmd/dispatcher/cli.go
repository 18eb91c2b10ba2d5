package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/willabides/kongplete"

	"github.com/chapar-dev/chapar/internal/buildinfo"
)

// cli is every command and flag of the dispatcher binary, parsed by kong:
// help goes to stdout with exit 0, a usage error to stderr with exit 2,
// and a failure to stderr, one line, with exit 1.
type cli struct {
	Version kong.VersionFlag `help:"Print the version and exit."`

	Run        cliRun        `cmd:"" help:"Serve: route and deliver events (embedded JetStream when no NATS server is given)."`
	Demo       cliDemo       `cmd:"" help:"Run the end-to-end tour and print a summary."`
	Config     cliConfig     `cmd:"" help:"Check a config file."`
	DLQ        cliDLQ        `cmd:"" name:"dlq" help:"Inspect, replay and purge dead letters."`
	Sinks      cliSinks      `cmd:"" help:"Pause, resume or remove a sink of the deployment."`
	Events     cliEvents     `cmd:"" help:"Look an event up: what became of it at each sink."`
	Emulator   cliEmulator   `cmd:"" passthrough:"" help:"Serve the local vendor emulator (flags: dispatcher emulator -h)."`
	Kenar      cliKenar      `cmd:"" help:"Divar Kenar administration."`
	Health     cliHealth     `cmd:"" help:"Exit 0 if a running dispatcher is ready (for container health checks)."`
	VersionCmd cliVersion    `cmd:"" name:"version" help:"Print the version of this build."`
	Completion cliCompletion `cmd:"" help:"Print a shell completion script: source <(dispatcher completion bash)."`
	Help       cliHelp       `cmd:"" help:"Show help: dispatcher help [COMMAND...] is dispatcher [COMMAND...] --help."`
}

// natsFlags are the connection flags of every command that talks to NATS,
// named as natscli names them; each overrides its key in --config.
type natsFlags struct {
	Context string `help:"A natscli context (nats context save NAME): its URL, credentials and TLS files, under the flags given." env:"NATS_CONTEXT" placeholder:"NAME" group:"nats"`
	// Server is not read from $NATS_URL by the parser: configSource reads
	// it, to say which of the two an error's URL came from.
	Server  string `help:"NATS server URL(s), comma-separated; overrides nats.url (default: $NATS_URL, else the embedded server of a local dispatcher run)." aliases:"nats-url" placeholder:"URL" group:"nats"`
	Creds   string `help:"NATS user credentials file (nats.creds_file)." placeholder:"FILE" group:"nats"`
	NKey    string `name:"nkey" help:"NATS NKey seed file (nats.nkey_file)." placeholder:"FILE" group:"nats"`
	TLSCert string `name:"tlscert" help:"TLS client certificate (nats.tls.cert_file)." placeholder:"FILE" group:"nats"`
	TLSKey  string `name:"tlskey" help:"TLS client key (nats.tls.key_file)." placeholder:"FILE" group:"nats"`
	TLSCA   string `name:"tlsca" help:"TLS CA certificate to verify the server (nats.tls.ca_file)." placeholder:"FILE" group:"nats"`
}

// streams are the process's standard streams, bound into every Run method.
type streams struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// usageError marks a command-line mistake (exit code 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// exitCode is 2 for a usage error (including a config that does not
// check), 1 for any other failure.
func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

// exited is how kong's exit (after --help or --version) unwinds a parse.
type exited int

const description = `Chapar dispatcher: delivers events from NATS JetStream to vendor APIs.

Commands that talk to NATS take natscli's connection flags (--server, default $NATS_URL; --creds; --nkey; --tlscert, --tlskey, --tlsca) over the nats keys of --config.`

func newParser(c *cli, s *streams, ctx context.Context) (*kong.Kong, error) {
	return kong.New(c,
		kong.Name("dispatcher"),
		kong.Description(description),
		kong.Writers(s.stdout, s.stderr),
		kong.Exit(func(code int) { panic(exited(code)) }),
		kong.Vars{"version": "chapar dispatcher " + buildinfo.Version()},
		kong.ExplicitGroups([]kong.Group{
			{Key: "filters", Title: "Filters:"},
			{Key: "nats", Title: "NATS connection (over the nats keys of --config):"},
		}),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true, NoExpandSubcommands: true}),
		kong.BindTo(ctx, (*context.Context)(nil)),
		kong.Bind(s),
	)
}

// runCommand parses args and runs the command they name.
func runCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runCommandIO(ctx, args, os.Stdin, stdout, stderr)
}

func runCommandIO(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	s := &streams{stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 && os.Getenv("COMP_LINE") == "" {
		// The whole usage, as for --help, but on stderr: nothing was asked.
		_ = help(ctx, &streams{stdin: stdin, stdout: stderr, stderr: stderr})
		return usageError{"no command given"}
	}
	var c cli
	parser, err := newParser(&c, s, ctx)
	if err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			code, ok := r.(exited)
			if !ok {
				panic(r)
			}
			if err = nil; code != 0 {
				err = usageError{fmt.Sprintf("exit %d", code)}
			}
		}
	}()
	if os.Getenv("COMP_LINE") != "" {
		kongplete.Complete(parser, kongplete.WithExitFunc(func(code int) { panic(exited(code)) }))
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		var pe *kong.ParseError
		if errors.As(err, &pe) && pe.Context != nil {
			if path := commandPath(pe.Context); path != "" {
				return usageError{fmt.Sprintf("%v (see dispatcher %s --help)", err, path)}
			}
		}
		return usageError{fmt.Sprintf("%v (see dispatcher --help)", err)}
	}
	return kctx.Run()
}

// cliHelp is "help [COMMAND...]": what git, go and natscli users type.
type cliHelp struct {
	Command []string `arg:"" optional:"" help:"The command to show (e.g. dlq, dlq list)." placeholder:"COMMAND"`
}

func (c *cliHelp) Run(ctx context.Context, s *streams) error {
	return help(ctx, s, c.Command...)
}

// help prints the help of the command named by words (none: the whole
// usage) on s.stdout; a word that names no command is a usage error.
func help(ctx context.Context, s *streams, words ...string) (err error) {
	var c cli
	parser, err := newParser(&c, s, ctx)
	if err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(exited); !ok {
				panic(r)
			}
		}
	}()
	kctx, err := parser.Parse(append(slices.Clone(words), "--help"))
	if err != nil {
		return usageError{fmt.Sprintf("%v (see dispatcher --help)", err)}
	}
	// Only a passthrough command (emulator) gets here: its own flag set
	// prints its help.
	return kctx.Run()
}

// commandPath is the command a parse got to ("dlq show"), for the hint.
func commandPath(ctx *kong.Context) string {
	var words []string
	for _, p := range ctx.Path {
		if p.Command != nil {
			words = append(words, p.Command.Name)
		}
	}
	return strings.Join(words, " ")
}

type cliVersion struct {
	JSON bool `help:"Print a JSON object."`
}

func (c *cliVersion) Run(s *streams) error {
	info := buildinfo.Read()
	if c.JSON {
		return writeJSON(s.stdout, info)
	}
	_, err := fmt.Fprintf(s.stdout, "chapar dispatcher %s (%s, %s)\n", info.Version, info.GoVersion, info.Platform)
	return err
}
