// Package tools pins the developer tools that the main go.mod should not
// carry (their dependencies would be listed there too). Run one with
//
//	go tool -modfile=tools/go.mod staticcheck ./...
//
// from the repository root; the tool is built at the version pinned here
// and checks the packages of the main module.
package tools
