// Package auth authenticates and authorizes every call a go-ldm server
// answers.
//
// It has three parts that cmd/ldm wires together:
//
//   - Middleware, an http.Handler wrapper that copies the request's TLS
//     state into the request context so that the interceptors can see the
//     verified client certificate (connect.Peer carries only an address).
//   - The authentication interceptor (Auth.Interceptors, first element),
//     which turns the request's credentials into an Identity: a verified
//     client certificate (ClientCert), a bearer token (Tokens, a file of
//     SHA-256 token hashes, each optionally with an expiry) or a Basic
//     username and password (Users, a file of bcrypt hashes, checked within
//     a BasicLimit). A request with no credentials is the subject
//     "anonymous"; a request with bad or expired credentials fails with
//     connect.CodeUnauthenticated, and a Basic check refused by the limit
//     with connect.CodeResourceExhausted before bcrypt runs.
//   - The authorization interceptor (second element), which maps each
//     procedure to an action (read, write or admin) on an object
//     ("volumes/NAME" or "cluster") and asks a Casbin enforcer. Streams are
//     authorized before the handler sees their first message and again for
//     every volume a later message names. Denials are
//     connect.CodeUnauthenticated for the anonymous subject and
//     connect.CodePermissionDenied otherwise.
//
// Invariants: credentials files and the policy are read at start and when
// they change on disk (a poller hashes their content and loads a change
// once two polls in a row see it, never an empty or missing file), never
// per call; decisions are cached per policy generation; a policy file
// that fails to parse never replaces a working one; unknown procedures are
// denied unless they are listed as public; at most BasicLimit.Concurrent
// bcrypt checks run at once. The server certificate of ServerTLS.Config
// follows its files the same way, checked by handshakes at most once per
// interval, and a pair that does not load never replaces a working one. Every exported type is safe for
// concurrent use unless its documentation says otherwise.
package auth
