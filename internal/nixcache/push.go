package nixcache

import (
	"bytes"
	"context"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
)

//go:embed hostfiles/cache.sh
var hostFiles embed.FS

// RemoteScript is the name of the push's script in the build's remote
// directory.
const RemoteScript = "cache.sh"

// partSize is the size of a multipart upload's parts; a NAR larger than
// one part is uploaded in parts (S3 takes at most 5 GiB in one PUT).
var partSize int64 = 64 << 20

// PushStats is what a push uploaded.
type PushStats struct {
	// Paths and Bytes (compressed) were uploaded; Present were in the
	// cache already; Failed could not be uploaded.
	Paths   int
	Bytes   int64
	Present int
	Failed  int
}

// pathInfo is one entry of `nix path-info --json`.
type pathInfo struct {
	Path       string   `json:"path"`
	NarHash    string   `json:"narHash"`
	NarSize    int64    `json:"narSize"`
	References []string `json:"references"`
	Deriver    string   `json:"deriver"`
	Ultimate   bool     `json:"ultimate"`
	Signatures []string `json:"signatures"`
	CA         string   `json:"ca"`
}

// parsePathInfos reads the output of one or more `nix path-info --json`
// runs: an object keyed by store path (Nix 2.19 and later) or an array.
func parsePathInfos(out []byte) ([]pathInfo, error) {
	var infos []pathInfo
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			return infos, nil
		} else if err != nil {
			return nil, fmt.Errorf("the host's nix path-info printed JSON that cannot be read (%w); check the host's Nix version", err)
		}
		if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '[' {
			var list []pathInfo
			if err := json.Unmarshal(raw, &list); err != nil {
				return nil, fmt.Errorf("the host's nix path-info printed JSON that cannot be read (%w); check the host's Nix version", err)
			}
			infos = append(infos, list...)
			continue
		}
		var m map[string]*pathInfo
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("the host's nix path-info printed JSON that cannot be read (%w); check the host's Nix version", err)
		}
		for p, pi := range m {
			if pi == nil {
				continue // not valid
			}
			pi.Path = p
			infos = append(infos, *pi)
		}
	}
}

// toPush keeps the paths the instance built itself (Nix marks them
// ultimate; fetched ones carry the signatures they came with), ordered so
// that every path comes after the references it has among them.
func toPush(infos []pathInfo) []pathInfo {
	byPath := map[string]pathInfo{}
	for _, pi := range infos {
		if pi.Ultimate && len(pi.Signatures) == 0 && pi.NarSize > 0 {
			byPath[pi.Path] = pi
		}
	}
	var order []pathInfo
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(p string)
	visit = func(p string) {
		if state[p] != 0 {
			return
		}
		state[p] = 1
		pi := byPath[p]
		refs := append([]string(nil), pi.References...)
		slices.Sort(refs)
		for _, r := range refs {
			if _, ok := byPath[r]; ok && r != p {
				visit(r)
			}
		}
		state[p] = 2
		order = append(order, pi)
	}
	keys := make([]string, 0, len(byPath))
	for p := range byPath {
		keys = append(keys, p)
	}
	slices.Sort(keys)
	for _, p := range keys {
		visit(p)
	}
	return order
}

// Pusher uploads a build's store paths: each NAR from the instance straight
// to S3 through presigned URLs, then its narinfo, signed here, then
// nix-cache-info. A narinfo is written only after its NAR and those of its
// references, so a push that stops half-way leaves nothing visible that
// points at a missing NAR.
type Pusher struct {
	Cfg *Config
	// AWS is the builder's AWS configuration; nil uses the SDK's default
	// chain.
	AWS *aws.Config
	// Comm reaches the instance; Dir is the build's remote directory.
	Comm packersdk.Communicator
	Dir  string
	// Say reports progress; Warn what the user should know.
	Say, Warn func(string)
}

// Push uploads what building target (a .drv or a store path) made on the
// instance. An error means nothing could be pushed (the bucket or the
// instance could not be used); single paths that fail are warnings.
func (p *Pusher) Push(ctx context.Context, target string) (PushStats, error) {
	var st PushStats
	if p.Cfg.secret == nil {
		return st, errors.New("internal error: push without a signing key")
	}
	b, err := openBucket(ctx, p.Cfg, p.AWS)
	if err != nil {
		return st, err
	}
	if err := b.check(ctx); err != nil {
		return st, err
	}
	script := path.Join(p.Dir, RemoteScript)
	data, _ := hostFiles.ReadFile("hostfiles/cache.sh")
	if err := p.Comm.Upload(script, bytes.NewReader(data), nil); err != nil {
		return st, fmt.Errorf("uploading %s to the host: %w", RemoteScript, err)
	}
	defer remotecmd.Output(context.WithoutCancel(ctx), p.Comm, remotecmd.Join([]string{"rm", "-f", "--", script}))
	out, err := p.remote(ctx, "", "paths", target)
	if err != nil {
		return st, fmt.Errorf("listing the store paths the build made: %w", err)
	}
	infos, err := parsePathInfos([]byte(out))
	if err != nil {
		return st, err
	}
	paths := toPush(infos)
	p.Say(fmt.Sprintf("cache: %d store paths were built on the instance; uploading those %s lacks", len(paths), p.Cfg.URL()))
	failed := map[string]bool{}
	for _, pi := range paths {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if dep := failedRef(pi, failed); dep != "" {
			failed[pi.Path] = true
			st.Failed++
			continue
		}
		ni, size, err := p.pushOne(ctx, b, pi)
		switch {
		case err != nil:
			failed[pi.Path] = true
			st.Failed++
			p.Warn(fmt.Sprintf("cache: could not push %s: %v", pi.Path, err))
		case ni == nil:
			st.Present++
		default:
			st.Paths++
			st.Bytes += size
		}
	}
	if st.Paths > 0 {
		if ok, err := b.exists(ctx, "nix-cache-info"); err == nil && !ok {
			if err := b.put(ctx, "nix-cache-info", "text/x-nix-cache-info", []byte("StoreDir: /nix/store\n")); err != nil {
				p.Warn(fmt.Sprintf("cache: could not write nix-cache-info: %v", err))
			}
		}
	}
	return st, nil
}

func failedRef(pi pathInfo, failed map[string]bool) string {
	for _, r := range pi.References {
		if r != pi.Path && failed[r] {
			return r
		}
	}
	return ""
}

// pushOne uploads one path's NAR and then its narinfo; nil when the cache
// has it already.
func (p *Pusher) pushOne(ctx context.Context, b *bucket, pi pathInfo) (*NarInfo, int64, error) {
	hash := hashPart(pi.Path)
	if ok, err := b.exists(ctx, hash+".narinfo"); err != nil {
		return nil, 0, err
	} else if ok {
		return nil, 0, nil
	}
	narHash, err := SHA256Hash(pi.NarHash)
	if err != nil {
		return nil, 0, err
	}
	out, err := p.remote(ctx, "", "nar", pi.Path)
	f := strings.Fields(out)
	if len(f) > 0 && strings.HasPrefix(f[0], "/") {
		defer remotecmd.Output(context.WithoutCancel(ctx), p.Comm, remotecmd.Join([]string{"rm", "-f", "--", f[0], f[0] + ".part"}))
	}
	if err != nil {
		return nil, 0, fmt.Errorf("making its NAR on the instance: %w", err)
	}
	if len(f) != 4 {
		return nil, 0, fmt.Errorf("cache.sh nar answered %q", out)
	}
	file := f[0]
	f = f[1:]
	sum, err := hex.DecodeString(f[1])
	size, serr := strconv.ParseInt(f[2], 10, 64)
	if err != nil || serr != nil || len(sum) != 32 {
		return nil, 0, fmt.Errorf("cache.sh nar answered %q", out)
	}
	ext := map[string]string{"zstd": ".zst", "xz": ".xz", "none": ""}[f[0]]
	name := "nar/" + nix32(sum) + ".nar" + ext
	if err := p.upload(ctx, b, file, name, size); err != nil {
		return nil, 0, err
	}
	ni := &NarInfo{
		StorePath: pi.Path, URL: name, Compression: f[0],
		FileHash: "sha256:" + nix32(sum), FileSize: size,
		NarHash: narHash, NarSize: pi.NarSize, CA: pi.CA,
	}
	for _, r := range pi.References {
		ni.References = append(ni.References, path.Base(r))
	}
	slices.Sort(ni.References)
	if pi.Deriver != "" {
		ni.Deriver = path.Base(pi.Deriver)
	}
	if err := ni.Sign(p.Cfg.secret); err != nil {
		return nil, 0, err
	}
	if err := b.put(ctx, hash+".narinfo", "text/x-nix-narinfo", []byte(ni.String())); err != nil {
		return nil, 0, fmt.Errorf("writing its narinfo: %w", err)
	}
	return ni, size, nil
}

// upload sends the instance's file to S3: one presigned PUT, or a
// multipart upload of presigned part PUTs.
func (p *Pusher) upload(ctx context.Context, b *bucket, file, name string, size int64) error {
	if size <= partSize {
		u, err := b.putURL(ctx, name)
		if err != nil {
			return err
		}
		_, err = p.remote(ctx, u+"\n", "put", file)
		return err
	}
	m, err := b.startMultipart(ctx, name)
	if err != nil {
		return err
	}
	for n, off := int32(1), int64(0); off < size; n, off = n+1, off+partSize {
		u, err := m.partURL(ctx, n)
		if err != nil {
			m.abort(ctx)
			return err
		}
		etag, err := p.remote(ctx, u+"\n", "put", file, strconv.FormatInt(off, 10), strconv.FormatInt(min(partSize, size-off), 10))
		if err != nil {
			m.abort(ctx)
			return err
		}
		m.done(n, strings.TrimSpace(etag))
	}
	if err := m.complete(ctx); err != nil {
		m.abort(ctx)
		return err
	}
	return nil
}

// remote runs cache.sh with args, stdin on its standard input.
func (p *Pusher) remote(ctx context.Context, stdin string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := &packersdk.RemoteCmd{
		Command: "bash " + remotecmd.Join(append([]string{path.Join(p.Dir, RemoteScript)}, args...)),
		Stdin:   strings.NewReader(stdin),
		Stdout:  &out, Stderr: &remotecmd.LimitedBuffer{B: &errb, Max: 16 << 10},
	}
	if err := p.Comm.Start(ctx, cmd); err != nil {
		return "", err
	}
	done := make(chan int, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case st := <-done:
		if st != 0 {
			return out.String(), fmt.Errorf("cache.sh %s exited with status %d: %s", args[0], st, strings.TrimSpace(errb.String()))
		}
		return out.String(), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}
