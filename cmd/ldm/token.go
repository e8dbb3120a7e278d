package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/xcheng85/go-ldm/service/auth"
)

// newTokenCommand is `ldm token`: bearer tokens and Basic users.
func newTokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Make bearer tokens and Basic users for `ldm serve --tokens/--users`",
		Long: `token edits the credentials files of ldm serve:

  ldm token create --file tokens.txt --subject alice --roles reader [--ttl 24h]
      prints a new token once and stores only its SHA-256 hash (and, with
      --ttl, when it expires)
  ldm token user --file users.txt --name bob --roles writer --password-stdin
      adds or replaces a user with a bcrypt hash of the password

Roles map to policy subjects "role:NAME"; the default policy knows reader,
writer and admin. A running server reloads changed files by itself.`,
	}
	cmd.AddCommand(newTokenCreateCommand(), newTokenUserCommand())
	return cmd
}

func newTokenCreateCommand() *cobra.Command {
	var (
		file, subject string
		roles         []string
		ttl           time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create --file FILE --subject NAME [--roles ROLE,...] [--ttl DURATION]",
		Short: "Create a token, store its hash in FILE and print it once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" || subject == "" {
				return usageError{errors.New("--file and --subject are required")}
			}
			if ttl < 0 {
				return usageError{fmt.Errorf("--ttl %v: must not be negative (0 means the token never expires)", ttl)}
			}
			var expires time.Time
			if ttl > 0 {
				expires = time.Now().Add(ttl)
			}
			tok, err := auth.NewToken()
			if err != nil {
				return err
			}
			if err := auth.AppendTokenExpiring(file, tok, subject, roles, expires); err != nil {
				if errors.Is(err, auth.ErrMalformed) {
					return usageError{err}
				}
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			fmt.Fprintf(cmd.ErrOrStderr(), "token for %s stored in %s; it is shown only now (use it as LDM_TOKEN or --token)\n", subject, file)
			if ttl > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "it expires at %s\n", expires.UTC().Truncate(time.Second).Format(time.RFC3339))
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&file, "file", "", "token file (created with mode 0600 if missing)")
	fs.StringVar(&subject, "subject", "", "the identity the token stands for")
	fs.StringSliceVar(&roles, "roles", nil, "roles of the subject (comma-separated), for example reader or writer")
	fs.DurationVar(&ttl, "ttl", 0, "how long the token works, for example 24h or 720h (0: it never expires)")
	return cmd
}

func newTokenUserCommand() *cobra.Command {
	var (
		file, name string
		roles      []string
		stdin      bool
		cost       int
	)
	cmd := &cobra.Command{
		Use:   "user --file FILE --name NAME [--roles ROLE,...] [--password-stdin]",
		Short: "Add or replace a Basic user (bcrypt hash) in FILE",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" || name == "" {
				return usageError{errors.New("--file and --name are required")}
			}
			pw, err := readPassword(cmd.InOrStdin(), cmd.ErrOrStderr(), stdin)
			if err != nil {
				return err
			}
			if err := auth.SetUser(file, name, pw, roles, cost); err != nil {
				if errors.Is(err, auth.ErrMalformed) {
					return usageError{err}
				}
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "user %s stored in %s\n", name, file)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&file, "file", "", "users file (created with mode 0600 if missing)")
	fs.StringVar(&name, "name", "", "user name")
	fs.StringSliceVar(&roles, "roles", nil, "roles of the user (comma-separated)")
	fs.BoolVar(&stdin, "password-stdin", false, "read the password from the first line of standard input")
	fs.IntVar(&cost, "bcrypt-cost", 0, "bcrypt cost (default 10)")
	return cmd
}

// readPassword reads a password from the first line of in (fromStdin) or
// asks twice on the terminal.
func readPassword(in io.Reader, prompt io.Writer, fromStdin bool) (string, error) {
	if fromStdin {
		line, err := bufio.NewReader(in).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read password: %w", err)
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	f, ok := in.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", usageError{errors.New("standard input is not a terminal: use --password-stdin")}
	}
	fmt.Fprint(prompt, "password: ")
	a, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(prompt)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	fmt.Fprint(prompt, "again: ")
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(prompt)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if string(a) != string(b) {
		return "", errors.New("the passwords differ")
	}
	return string(a), nil
}
