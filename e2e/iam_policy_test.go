//go:build e2e

package e2e

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// The IAM policy in docs/iam-policy.json must allow exactly the actions the
// plugin calls: every AWS call each end-to-end test's build made through the
// fault proxy (not the test bed's own calls) is collected here, and after
// the whole suite ran TestMain compares the set with the policy.

// impliedActions are allowed by the policy without being called by name:
// AWS authorizes them as part of a call the plugin makes.
var impliedActions = map[string]string{
	// CreateFleet of type instant launches with the caller's own
	// permissions ("EC2 Fleet prerequisites": instant fleets use no
	// service-linked role for the launch).
	"ec2:RunInstances": "CreateFleet launches the instance with the caller's ec2:RunInstances permission",
	// "Grant permission to tag Amazon EC2 resources during creation": tag
	// specifications on CreateSecurityGroup, CreateLaunchTemplate and
	// CreateFleet are authorized as ec2:CreateTags.
	"ec2:CreateTags": "tags given at creation are authorized as ec2:CreateTags",
	// The first spot request of an account creates AWSServiceRoleForEC2Spot.
	"iam:CreateServiceLinkedRole": "the first spot request creates the service-linked role AWSServiceRoleForEC2Spot",
	// "Amazon EBS encryption" (EBS user guide, "How EBS encryption works"):
	// EBS uses a customer-managed key on the caller's behalf when it creates
	// the encrypted volume an instance launches with.
	"kms:CreateGrant":                     "EBS creates a grant on the volume's customer-managed KMS key for the launch",
	"kms:Decrypt":                         "EBS decrypts the volume's data key with the customer-managed KMS key",
	"kms:DescribeKey":                     "EBS checks the customer-managed KMS key before it uses it",
	"kms:GenerateDataKeyWithoutPlaintext": "EBS makes the volume's data key under the customer-managed KMS key",
	"kms:ReEncryptFrom":                   "EBS re-encrypts the snapshot's data key under the volume's key",
	"kms:ReEncryptTo":                     "EBS re-encrypts the snapshot's data key under the volume's key",
}

// freeActions need no IAM permission at all (their API reference says so):
// the policy does not list them.
var freeActions = map[string]string{
	"sts:GetCallerIdentity": "no permissions are required to perform this operation (STS API reference); it tells a region not enabled from wrong credentials",
}

var called = struct {
	sync.Mutex
	by map[string][]string // "ec2:CreateFleet" -> tests
}{by: map[string][]string{}}

// recordCalls keeps the actions the code under test called in tb.
func recordCalls(test string, tb *testbed.Testbed) {
	called.Lock()
	defer called.Unlock()
	for _, c := range tb.Proxy().Calls() {
		if c.FromTestbed() || c.Action == "" {
			continue
		}
		svc := c.Service
		if svc == "" {
			svc = "ec2"
		}
		a := svc + ":" + c.Action
		if !slices.Contains(called.by[a], test) {
			called.by[a] = append(called.by[a], test)
		}
	}
}

// iamPolicy is the part of an IAM policy document the check reads.
type iamPolicy struct {
	Version   string
	Statement []struct {
		Sid       string
		Effect    string
		Action    json.RawMessage
		Resource  json.RawMessage
		Condition map[string]map[string]any
	}
}

// PolicyActions reads the Allow actions of the policy file.
func policyActions(path string) (map[string]bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p iamPolicy
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if p.Version != "2012-10-17" {
		return nil, fmt.Errorf("%s: Version %q, want 2012-10-17", path, p.Version)
	}
	out := map[string]bool{}
	for _, st := range p.Statement {
		if st.Effect != "Allow" {
			return nil, fmt.Errorf("%s: statement %q is %q; the policy only allows", path, st.Sid, st.Effect)
		}
		var many []string
		if err := json.Unmarshal(st.Action, &many); err != nil {
			var one string
			if err := json.Unmarshal(st.Action, &one); err != nil {
				return nil, fmt.Errorf("%s: statement %q: Action is neither a string nor a list", path, st.Sid)
			}
			many = []string{one}
		}
		for _, a := range many {
			if strings.Contains(a, "*") {
				return nil, fmt.Errorf("%s: statement %q allows %q; name each action", path, st.Sid, a)
			}
			out[a] = true
		}
	}
	return out, nil
}

// checkIAMPolicy compares the collected calls with the policy: after the
// whole suite, exactly; after a -run subset, only that every call is allowed.
func checkIAMPolicy(code int) int {
	if code != 0 {
		return code
	}
	root, err := testbed.RepoRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: IAM policy check: %v\n", err)
		return 1
	}
	policy, err := policyActions(filepath.Join(root, "docs", "iam-policy.json"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: IAM policy check: %v\n", err)
		return 1
	}
	called.Lock()
	defer called.Unlock()
	full := flag.Lookup("test.run").Value.String() == "" && flag.Lookup("test.skip").Value.String() == ""
	if dir := os.Getenv(partsDirEnv); dir != "" {
		// One part of a suite split across processes: the last part to end
		// checks the union.
		merged, err := mergeParts(dir)
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: IAM policy check: %v\n", err)
			return 1
		}
		full = merged
	}
	var problems []string
	var names []string
	for a := range called.by {
		names = append(names, a)
	}
	sort.Strings(names)
	for _, a := range names {
		if _, free := freeActions[a]; !policy[a] && !free {
			problems = append(problems, fmt.Sprintf("%s is called (by %s) but docs/iam-policy.json does not allow it", a, strings.Join(called.by[a], ", ")))
		}
	}
	if full {
		var allowed []string
		for a := range policy {
			allowed = append(allowed, a)
		}
		sort.Strings(allowed)
		for _, a := range allowed {
			if _, ok := called.by[a]; ok {
				continue
			}
			if _, ok := impliedActions[a]; ok {
				continue
			}
			problems = append(problems, fmt.Sprintf("docs/iam-policy.json allows %s, which no end-to-end build called; remove it (or name why AWS needs it in impliedActions)", a))
		}
		for a := range impliedActions {
			if !policy[a] {
				problems = append(problems, fmt.Sprintf("docs/iam-policy.json lacks %s: %s", a, impliedActions[a]))
			}
		}
	}
	if len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "e2e: IAM policy check failed:\n  %s\n", strings.Join(problems, "\n  "))
		return 1
	}
	what := "every call allowed (subset run)"
	if os.Getenv(partsDirEnv) != "" && !full {
		what = "every call of this part allowed (the suite's last part to end checks them all)"
	}
	if full {
		what = "exactly the called and implied actions"
	}
	fmt.Fprintf(os.Stderr, "e2e: IAM policy check: %d actions called, docs/iam-policy.json allows %s\n", len(names), what)
	return 0
}

// partsDirEnv names a folder shared by the processes a full suite run is
// split into (scripts/e2e-suite.sh); each expects partsExpected parts.
const (
	partsDirEnv   = "NIXOS_SD_E2E_PARTS_DIR"
	partsExpected = 3
)

// mergeParts records this part's calls in the parts folder and, when every
// part has ended, adds theirs to called and returns true: the full check
// runs on the union. The folder's lock orders the parts' ends.
func mergeParts(dir string) (bool, error) {
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return false, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return false, err
	}
	mine, err := json.Marshal(called.by)
	if err != nil {
		return false, err
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("calls-%d.json", os.Getpid())), mine, 0o600); err != nil {
		return false, err
	}
	files, err := filepath.Glob(filepath.Join(dir, "calls-*.json"))
	if err != nil || len(files) < partsExpected {
		return false, err
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return false, err
		}
		var by map[string][]string
		if err := json.Unmarshal(b, &by); err != nil {
			return false, fmt.Errorf("%s: %w", f, err)
		}
		for a, tests := range by {
			for _, t := range tests {
				if !slices.Contains(called.by[a], t) {
					called.by[a] = append(called.by[a], t)
				}
			}
		}
	}
	return true, nil
}
