package main

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestREADMEListsTheIAMPolicy: the README's permission list is the Allow
// actions of docs/iam-policy.json, in order, no more and no less (the
// end-to-end suite checks the policy against what the builds call).
func TestREADMEListsTheIAMPolicy(t *testing.T) {
	data, err := os.ReadFile("docs/iam-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	var policy struct {
		Statement []struct {
			Effect string
			Action json.RawMessage
		}
	}
	if err := json.Unmarshal(data, &policy); err != nil {
		t.Fatalf("docs/iam-policy.json: %v", err)
	}
	var want []string
	for _, st := range policy.Statement {
		var many []string
		if json.Unmarshal(st.Action, &many) != nil {
			var one string
			if err := json.Unmarshal(st.Action, &one); err != nil {
				t.Fatalf("docs/iam-policy.json: Action %s is neither a string nor a list", st.Action)
			}
			many = []string{one}
		}
		want = append(want, many...)
	}
	slices.Sort(want)

	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile(`(?s)<!-- iam-policy:begin[^>]*-->\n(.*?)<!-- iam-policy:end -->`).FindSubmatch(readme)
	if block == nil {
		t.Fatal("README.md has no <!-- iam-policy:begin --> ... <!-- iam-policy:end --> block")
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(string(block[1])), "\n") {
		m := regexp.MustCompile("^- `([a-z0-9]+:[A-Za-z]+)`$").FindStringSubmatch(line)
		if m == nil {
			t.Errorf("README.md permission list: line %q is not \"- `service:Action`\"", line)
			continue
		}
		got = append(got, m[1])
	}
	if !slices.Equal(got, want) {
		t.Errorf("README.md lists %v, docs/iam-policy.json allows %v; list exactly the policy's actions, sorted", got, want)
	}
	if strings.Contains(strings.ToLower(string(readme)), "key pairs") {
		t.Error("README.md speaks of key pairs; the builder creates none")
	}
}
