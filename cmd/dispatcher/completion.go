package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// cliCompletion prints the script that has the shell ask the binary itself
// for completions (kongplete answers when COMP_LINE is set).
type cliCompletion struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"bash, zsh or fish."`
}

var completionScripts = map[string]string{
	"bash": "complete -C ${bin} ${cmd}\n",
	"zsh":  "autoload -U +X bashcompinit && bashcompinit\ncomplete -C ${bin} ${cmd}\n",
	"fish": `function __complete_${cmd}
    set -lx COMP_LINE (commandline -cp)
    test -z (commandline -ct)
    and set COMP_LINE "$COMP_LINE "
    ${bin}
end
complete -f -c ${cmd} -a "(__complete_${cmd})"
`,
}

func (c *cliCompletion) Run(s *streams) error {
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("completion: cannot find this binary's path: %w", err)
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return fmt.Errorf("completion: %w", err)
	}
	vars := map[string]string{"cmd": "dispatcher", "bin": shellQuote(bin)}
	_, err = fmt.Fprint(s.stdout, os.Expand(completionScripts[c.Shell], func(k string) string {
		if v, ok := vars[k]; ok {
			return v
		}
		return "$" + k
	}))
	return err
}

// shellQuote is s as one shell word: as it is when every byte is one no
// shell gives a meaning to (globs, separators, expansions, spaces), else
// in single quotes.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
