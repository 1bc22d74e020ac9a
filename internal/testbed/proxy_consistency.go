package testbed

import (
	"fmt"
	"regexp"
	"time"
)

// EC2 is eventually consistent: a resource a call has just created may
// answer *.NotFound, for a while, to calls that name it ("Eventual
// consistency in the Amazon EC2 API", EC2 API reference). A Rule with
// NotFoundCalls or NotFoundFor on a creating action lets the call through
// and then hides what it created from later calls naming its id.

// createdKind is what a creating action makes and how EC2 says it is
// unknown.
type createdKind struct {
	id      *regexp.Regexp
	code    string
	message string // %s = the id
}

var createdKinds = map[string]createdKind{
	"RunInstances":         {regexp.MustCompile(`\bi-[0-9a-f]{8,17}\b`), "InvalidInstanceID.NotFound", "The instance ID '%s' does not exist"},
	"CreateFleet":          {regexp.MustCompile(`\bi-[0-9a-f]{8,17}\b`), "InvalidInstanceID.NotFound", "The instance ID '%s' does not exist"},
	"CreateSecurityGroup":  {regexp.MustCompile(`\bsg-[0-9a-f]{8,17}\b`), "InvalidGroup.NotFound", "The security group '%s' does not exist"},
	"CreateLaunchTemplate": {regexp.MustCompile(`\blt-[0-9a-f]{8,17}\b`), "InvalidLaunchTemplateId.NotFound", "The specified launch template, with template ID %s, does not exist."},
}

// hidden is a just-created resource calls cannot see yet.
type hidden struct {
	id      string
	kind    createdKind
	calls   int       // calls left to answer NotFound (with NotFoundCalls)
	until   time.Time // or until then (with NotFoundFor)
	answers int
}

func (h *hidden) active(now time.Time) bool {
	if h.calls > 0 {
		return true
	}
	return !h.until.IsZero() && now.Before(h.until)
}

// hide makes the ids a creating call's answer names invisible as the rule says.
func (p *Proxy) hide(action string, answer []byte, rule *Rule) []string {
	kind, ok := createdKinds[action]
	if !ok {
		return nil
	}
	ids := dedupeStrings(kind.id.FindAllString(string(answer), -1))
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		h := &hidden{id: id, kind: kind, calls: rule.NotFoundCalls}
		if rule.NotFoundFor > 0 {
			h.until = time.Now().Add(rule.NotFoundFor)
		}
		p.hidden = append(p.hidden, h)
	}
	return ids
}

// notYetVisible returns the NotFound error for a call that names a hidden
// resource, counting the call.
func (p *Proxy) notYetVisible(c Call) (code, message string, ok bool) {
	if c.Action == "CreateLaunchTemplate" || c.Action == "CreateLaunchTemplateVersion" {
		// EC2 does not look up what a launch template names until it is used.
		return "", "", false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for _, h := range p.hidden {
		if !h.active(now) {
			continue
		}
		for _, v := range c.Params {
			if v == h.id {
				if h.calls > 0 {
					h.calls--
				}
				h.answers++
				return h.kind.code, fmt.Sprintf(h.kind.message, h.id), true
			}
		}
	}
	return "", "", false
}

// NotFoundAnswers is how many calls the proxy answered NotFound for id
// because it was not visible yet.
func (p *Proxy) NotFoundAnswers(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, h := range p.hidden {
		if h.id == id {
			n += h.answers
		}
	}
	return n
}

// Hidden lists the ids that rules made invisible after their creation, in
// order.
func (p *Proxy) Hidden() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ids []string
	for _, h := range p.hidden {
		ids = append(ids, h.id)
	}
	return ids
}

func dedupeStrings(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
