package auth_test

import (
	"fmt"
	"log/slog"

	"github.com/xcheng85/go-ldm/service/auth"
)

// Example shows the wiring of a server: authenticators in order, the
// interceptors (authentication, then authorization) for service.Config, and
// the middleware around the whole handler.
func Example() {
	a, err := auth.New(auth.Config{
		Authenticators: []auth.Authenticator{auth.ClientCert{}},
		ReloadInterval: -1,
		Logger:         slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	defer a.Close()
	for _, ic := range a.Interceptors() {
		fmt.Printf("%T\n", ic)
	}
	// handler := a.Middleware(mux); service.Config{Interceptors: a.Interceptors()}

	root := auth.Identity{Subject: "root", Method: auth.MethodCert}
	d, _ := a.Authorizer().Allow(root, auth.VolumeObject("ct-1"), auth.ActionAdmin)
	fmt.Println("root may administer volumes/ct-1:", d.Allowed)
	reader := auth.Identity{Subject: "alice", Roles: []string{"reader"}, Method: auth.MethodToken}
	d, _ = a.Authorizer().Allow(reader, auth.ObjectCluster, auth.ActionAdmin)
	fmt.Println("a reader may administer the cluster:", d.Allowed)
	// Output:
	// *auth.authnInterceptor
	// *auth.authzInterceptor
	// root may administer volumes/ct-1: true
	// a reader may administer the cluster: false
}

func ExampleParseAuthorization() {
	c, err := auth.ParseAuthorization(auth.FormatBasic("bob", "s3cret"))
	fmt.Println(c.Scheme, c.Username, c.Password, err)
	c, err = auth.ParseAuthorization("Bearer ldm_abc")
	fmt.Println(c.Scheme, c.Token, err)
	_, err = auth.ParseAuthorization("Bearer two words")
	fmt.Println(err)
	// Output:
	// Basic bob s3cret <nil>
	// Bearer ldm_abc <nil>
	// malformed credentials: Bearer credentials contain characters outside token68
}
