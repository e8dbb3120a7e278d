// Command ldm is the go-ldm binary: it serves the ldm.v1 API (`ldm serve`)
// and is a client of it (`ldm volume`, `ldm tile`, `ldm brick`,
// `ldm import`, `ldm cluster`, `ldm certs`, `ldm token`). Run `ldm help`
// for the commands.
//
// The package only maps command lines to the project's packages: `ldm
// serve` maps flags and LDM_* environment variables to a server.Config
// (serve.go, certs_serve.go, cluster_serve.go) and runs server.New and
// Serve; client commands build connect clients from clientFlags (client.go,
// certs_client.go). Every subcommand is added to the root command
// explicitly in newRootCommand; there is no registration from init and no
// state outside the command being run, so several commands can run in one
// process (as the tests do).
//
// main calls run with a context that SIGINT and SIGTERM cancel; errors map
// to exit codes: 2 a usage mistake (including an invalid server
// configuration), 3 the server could not be reached, 1 anything else.
package main
