package auth

import (
	_ "embed"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/casbin/casbin/v2"
	"github.com/casbin/casbin/v2/model"
	"github.com/casbin/casbin/v2/persist"
)

// DefaultModel is the embedded Casbin model used when no model file is
// given.
//
//go:embed model.conf
var DefaultModel string

// DefaultPolicy is the embedded Casbin policy used when no policy file is
// given.
//
//go:embed policy.csv
var DefaultPolicy string

// Actions.
const (
	ActionRead  = "read"
	ActionWrite = "write"
	ActionAdmin = "admin"
)

// ObjectCluster is the object of cluster membership calls.
const ObjectCluster = "cluster"

// VolumeObject returns the policy object of a volume: "volumes/" + name.
// The prefix keeps a volume named "cluster" apart from the cluster.
func VolumeObject(name string) string { return "volumes/" + name }

// ErrPolicy wraps every error about a model or policy that does not load.
var ErrPolicy = errors.New("invalid authorization policy")

// maxDecisions bounds the decision cache of one policy generation; when it
// is full it starts over.
const maxDecisions = 1 << 16

// policyState is one loaded model and policy with its decision cache.
type policyState struct {
	enf   *casbin.SyncedEnforcer
	gen   uint64
	cache atomic.Pointer[sync.Map] // decision key -> bool
	n     atomic.Int64
}

// Authorizer answers "may these subjects do this action on this object"
// from a Casbin model and policy. Decisions are cached until the policy is
// reloaded. It is safe for concurrent use.
type Authorizer struct {
	modelPath, policyPath string
	state                 atomic.Pointer[policyState]
	mu                    sync.Mutex // serializes Reload
	gen                   uint64
}

// NewAuthorizer loads the model and policy files; an empty path means the
// embedded default (DefaultModel, DefaultPolicy).
func NewAuthorizer(modelPath, policyPath string) (*Authorizer, error) {
	a := &Authorizer{modelPath: modelPath, policyPath: policyPath}
	if err := a.Reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// Paths returns the model and policy files (empty for embedded defaults).
func (a *Authorizer) Paths() (modelPath, policyPath string) { return a.modelPath, a.policyPath }

// Generation returns a number that changes every time a policy is loaded.
func (a *Authorizer) Generation() uint64 { return a.state.Load().gen }

// Reload reads the model and policy again and, if they load and validate,
// swaps them in and drops cached decisions. On error the old policy stays.
func (a *Authorizer) Reload() error {
	modelText, policyText := DefaultModel, DefaultPolicy
	if a.modelPath != "" {
		b, err := os.ReadFile(a.modelPath)
		if err != nil {
			return fmt.Errorf("auth: read model: %w", err)
		}
		modelText = string(b)
	}
	if a.policyPath != "" {
		b, err := os.ReadFile(a.policyPath)
		if err != nil {
			return fmt.Errorf("auth: read policy: %w", err)
		}
		policyText = string(b)
	}
	enf, err := NewEnforcer(modelText, policyText)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gen++
	st := &policyState{enf: enf, gen: a.gen}
	st.cache.Store(new(sync.Map))
	a.state.Store(st)
	return nil
}

// NewEnforcer builds a Casbin enforcer from model and policy text and
// validates the policy: every line's type exists in the model with the
// right number of fields, and an object pattern has "*" only at its end
// (keyMatch treats anything after the first "*" as matching, so
// "volumes/*-x" would silently match every volume).
func NewEnforcer(modelText, policyText string) (*casbin.SyncedEnforcer, error) {
	m, err := model.NewModelFromString(modelText)
	if err != nil {
		return nil, fmt.Errorf("%w: model: %v", ErrPolicy, err)
	}
	enf, err := casbin.NewSyncedEnforcer(m, &textAdapter{text: policyText})
	if errors.Is(err, ErrPolicy) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPolicy, err)
	}
	return enf, nil
}

// textAdapter is a read-only Casbin adapter over policy text that, unlike
// Casbin's string adapter, reports malformed lines.
type textAdapter struct{ text string }

func (t *textAdapter) LoadPolicy(m model.Model) error {
	for n, line := range strings.Split(t.text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := csv.NewReader(strings.NewReader(line))
		r.TrimLeadingSpace = true
		rule, err := r.Read()
		if err != nil {
			return fmt.Errorf("%w: line %d: %v", ErrPolicy, n+1, err)
		}
		for i := range rule {
			rule[i] = strings.TrimSpace(rule[i])
		}
		ptype := rule[0]
		if ptype == "" {
			return fmt.Errorf("%w: line %d: empty policy type", ErrPolicy, n+1)
		}
		// Only policy (p...) and role (g...) lines hold rules; a line typed
		// like another section ("r", "e", "m") would load into that
		// section's assertion and silently grant nothing.
		sec := ptype[:1]
		if sec != "p" && sec != "g" {
			return fmt.Errorf("%w: line %d: policy type %q is not a p or g type", ErrPolicy, n+1, ptype)
		}
		ast, ok := m[sec][ptype]
		if !ok {
			return fmt.Errorf("%w: line %d: policy type %q is not in the model", ErrPolicy, n+1, ptype)
		}
		if len(rule)-1 != len(ast.Tokens) {
			return fmt.Errorf("%w: line %d: %s wants %d fields, got %d", ErrPolicy, n+1, ptype, len(ast.Tokens), len(rule)-1)
		}
		for i, tok := range ast.Tokens {
			if strings.HasSuffix(tok, "_obj") {
				if j := strings.IndexByte(rule[i+1], '*'); j >= 0 && j != len(rule[i+1])-1 {
					return fmt.Errorf("%w: line %d: object %q may contain '*' only at its end", ErrPolicy, n+1, rule[i+1])
				}
			}
		}
		if err := persist.LoadPolicyArray(rule, m); err != nil {
			return fmt.Errorf("%w: line %d: %v", ErrPolicy, n+1, err)
		}
	}
	return nil
}

var errReadOnly = errors.New("auth: the policy adapter is read-only")

func (t *textAdapter) SavePolicy(model.Model) error                { return errReadOnly }
func (t *textAdapter) AddPolicy(string, string, []string) error    { return errReadOnly }
func (t *textAdapter) RemovePolicy(string, string, []string) error { return errReadOnly }
func (t *textAdapter) RemoveFilteredPolicy(string, string, int, ...string) error {
	return errReadOnly
}

// Decision is the answer of Authorizer.Allow.
type Decision struct {
	Allowed    bool
	Generation uint64 // the policy generation that answered
}

// Allow reports whether any of the identity's subjects (see Identity) may
// do act on obj. key is a string that identifies the subjects (see
// decisionKey); the answer is cached under it.
func (a *Authorizer) allow(subjects []string, subjectsKey, obj, act string) (Decision, error) {
	st := a.state.Load()
	k := subjectsKey + "\x00" + obj + "\x00" + act
	cache := st.cache.Load()
	if v, ok := cache.Load(k); ok {
		return Decision{Allowed: v.(bool), Generation: st.gen}, nil
	}
	allowed := false
	for _, s := range subjects {
		ok, err := st.enf.Enforce(s, obj, act)
		if err != nil {
			return Decision{Generation: st.gen}, fmt.Errorf("%w: enforce: %v", ErrPolicy, err)
		}
		if ok {
			allowed = true
			break
		}
	}
	if st.n.Add(1) > maxDecisions {
		st.cache.Store(new(sync.Map))
		st.n.Store(0)
	}
	st.cache.Load().Store(k, allowed)
	return Decision{Allowed: allowed, Generation: st.gen}, nil
}

// Allow reports whether id may do act on obj under the current policy.
// A share identity (Method MethodShare) may read its one volume and
// nothing else; the policy is not consulted for it.
func (a *Authorizer) Allow(id Identity, obj, act string) (Decision, error) {
	if allowed, ok := shareDecision(id, obj, act); ok {
		return Decision{Allowed: allowed, Generation: a.Generation()}, nil
	}
	s := id.subjects()
	return a.allow(s, strings.Join(s, "\x1f"), obj, act)
}
