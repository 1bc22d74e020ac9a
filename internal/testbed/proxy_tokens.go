package testbed

import (
	"net/http"
	"slices"
	"strings"
	"sync"
)

// Client tokens. moto ignores ClientToken: every retried request creates
// another fleet, template or instance. EC2 makes a request with a client
// token idempotent ("Ensuring idempotency in Amazon EC2 API requests", EC2
// API reference): a repeat with the same token and the same parameters
// answers what the first answered and creates nothing; the same token with
// other parameters is refused with IdempotentParameterMismatch. The proxy
// plays that for the actions below, keeping each token's first successful
// answer (also one whose caller never saw it: proxy_answer.go).

// idempotentActions take a ClientToken (EC2 API reference). CreateSecurityGroup
// has none: its name, unique in the VPC, is what stops a second group.
var idempotentActions = []string{"CreateFleet", "CreateLaunchTemplate", "RunInstances"}

// tokenAnswer is the first successful answer to a client token.
type tokenAnswer struct {
	params string // the request's parameters, in canonical order
	status int
	body   []byte
}

type tokenCache struct {
	mu      sync.Mutex
	answers map[string]tokenAnswer // region/action/token -> answer
}

// tokenKey is the cache key of a call, "" when the call carries no token of
// an idempotent action.
func tokenKey(c Call) string {
	token := c.Params["ClientToken"]
	if token == "" || !slices.Contains(idempotentActions, c.Action) {
		return ""
	}
	return c.Region + "/" + c.Action + "/" + token
}

// canonicalParams renders the call's parameters in a fixed order.
func canonicalParams(c Call) string {
	keys := make([]string, 0, len(c.Params))
	for k := range c.Params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + c.Params[k] + "\n")
	}
	return b.String()
}

// remember keeps a successful answer to a call with a client token.
func (tc *tokenCache) remember(c Call, status int, body []byte) {
	key := tokenKey(c)
	if key == "" || status != http.StatusOK {
		return
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.answers == nil {
		tc.answers = map[string]tokenAnswer{}
	}
	if _, ok := tc.answers[key]; !ok {
		tc.answers[key] = tokenAnswer{params: canonicalParams(c), status: status, body: append([]byte(nil), body...)}
	}
}

// lookup finds the answer to a repeated token: ok with the first answer, or
// mismatch when the parameters differ.
func (tc *tokenCache) lookup(c Call) (a tokenAnswer, ok, mismatch bool) {
	key := tokenKey(c)
	if key == "" {
		return a, false, false
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	a, ok = tc.answers[key]
	if ok && a.params != canonicalParams(c) {
		return a, false, true
	}
	return a, ok, false
}

// serveRepeatedToken answers a call whose client token was seen before, as
// EC2 does; it returns false when the call is not a repeat.
func (p *Proxy) serveRepeatedToken(w http.ResponseWriter, idx int, c Call) bool {
	a, ok, mismatch := p.tokens.lookup(c)
	switch {
	case mismatch:
		p.update(idx, func(r *Call) { r.Status, r.ErrorCode = http.StatusBadRequest, "IdempotentParameterMismatch" })
		writeEC2Error(w, http.StatusBadRequest, "IdempotentParameterMismatch",
			"The client token you have provided is associated with a resource that is already deleted or has different parameters. Please use a different client token.", p.requestID())
		return true
	case ok:
		p.logf("fault proxy: %s #%d (%s): client token %s seen before; answering its first answer", c.Action, idx+1, c.Region, c.Params["ClientToken"])
		p.update(idx, func(r *Call) { r.Status, r.Repeated = a.status, true })
		w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
		w.WriteHeader(a.status)
		_, _ = w.Write(a.body)
		return true
	}
	return false
}
