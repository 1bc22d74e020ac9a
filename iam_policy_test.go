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

// TestCachePolicy: docs/iam-policy-cache.json, the optional statements for
// the `cache` block, allows what internal/nixcache calls and no more:
// GetObject and HeadObject (s3:GetObject), PutObject and the multipart
// upload's Create, UploadPart and Complete (s3:PutObject),
// AbortMultipartUpload, on the objects under the prefix; and s3:ListBucket
// on the bucket itself, without an s3:prefix condition: S3 answers a read of
// a missing key with 404 only when ListBucket applies to that key (403
// otherwise), and the cache asks for missing narinfos all the time.
func TestCachePolicy(t *testing.T) {
	data, err := os.ReadFile("docs/iam-policy-cache.json")
	if err != nil {
		t.Fatal(err)
	}
	var policy struct {
		Version   string
		Statement []struct {
			Sid       string
			Effect    string
			Action    json.RawMessage
			Resource  string
			Condition json.RawMessage
		}
	}
	if err := json.Unmarshal(data, &policy); err != nil {
		t.Fatalf("docs/iam-policy-cache.json: %v", err)
	}
	if policy.Version != "2012-10-17" || len(policy.Statement) != 2 {
		t.Fatalf("docs/iam-policy-cache.json: want version 2012-10-17 and two statements, got %q and %d", policy.Version, len(policy.Statement))
	}
	actions := func(raw json.RawMessage) []string {
		var many []string
		if json.Unmarshal(raw, &many) != nil {
			var one string
			json.Unmarshal(raw, &one)
			many = []string{one}
		}
		return many
	}
	objects, bucket := policy.Statement[0], policy.Statement[1]
	if got := actions(objects.Action); !slices.Equal(got, []string{"s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"}) {
		t.Errorf("the objects statement allows %v", got)
	}
	if objects.Resource != "arn:aws:s3:::YOUR-CACHE-BUCKET/YOUR-PREFIX/*" {
		t.Errorf("the objects statement's resource is %q, want the objects under the prefix", objects.Resource)
	}
	if got := actions(bucket.Action); !slices.Equal(got, []string{"s3:ListBucket"}) || bucket.Resource != "arn:aws:s3:::YOUR-CACHE-BUCKET" {
		t.Errorf("the bucket statement allows %v on %q, want s3:ListBucket on the bucket", got, bucket.Resource)
	}
	if len(bucket.Condition) > 0 {
		t.Errorf("the ListBucket statement has a condition %s: a read of a missing narinfo would answer 403 instead of 404", bucket.Condition)
	}
	for _, st := range policy.Statement {
		if st.Effect != "Allow" || st.Sid == "" {
			t.Errorf("statement %q: want a Sid and Effect Allow", st.Sid)
		}
	}
	guide, err := os.ReadFile("docs/guides/binary-cache.md")
	if err != nil || !strings.Contains(string(guide), "docs/iam-policy-cache.json") && !strings.Contains(string(guide), "../iam-policy-cache.json") {
		t.Errorf("docs/guides/binary-cache.md must point at the policy (%v)", err)
	}
}
