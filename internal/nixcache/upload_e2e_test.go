//go:build e2e

package nixcache

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd/remotecmdtest"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// TestUploadThroughPresignedURLs: cache.sh uploads a file with curl through
// presigned URLs to moto's S3, in one PUT or, above the part size, as a
// multipart upload of presigned part PUTs (S3's 5 MiB minimum part), and
// the objects hold the file's bytes.
func TestUploadThroughPresignedURLs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tb, err := testbed.Start(ctx, testbed.Options{WorkDir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	s3c := tb.S3Client(ctx)
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("cache-bucket"),
		CreateBucketConfiguration: &s3types.CreateBucketConfiguration{LocationConstraint: "us-east-2"}}); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, tb.MotoEndpoint())
	ac := aws.Config{Region: "us-east-2", Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", "")}
	b, err := openBucket(ctx, cfg, &ac)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, RemoteScript)
	data, _ := hostFiles.ReadFile("hostfiles/cache.sh")
	os.WriteFile(script, data, 0o755)
	p := &Pusher{Cfg: cfg, AWS: &ac, Comm: &remotecmdtest.Local{}, Dir: dir, Say: func(s string) { t.Log(s) }, Warn: func(s string) { t.Log(s) }}

	defer func(n int64) { partSize = n }(partSize)
	partSize = 5 << 20
	for _, size := range []int64{1000, 11<<20 + 123} {
		file := filepath.Join(dir, "nar")
		want := make([]byte, size)
		rand.Read(want)
		os.WriteFile(file, want, 0o600)
		name := "nar/test-" + time.Now().Format("150405.000000") + ".nar"
		if err := p.upload(ctx, b, file, name, size); err != nil {
			t.Fatalf("uploading %d bytes: %v", size, err)
		}
		out, err := s3c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("cache-bucket"), Key: aws.String("nix/" + name)})
		if err != nil {
			t.Fatalf("reading back %s: %v", name, err)
		}
		got, _ := io.ReadAll(out.Body)
		out.Body.Close()
		if !bytes.Equal(got, want) {
			t.Fatalf("%s holds %d bytes that differ from the %d uploaded", name, len(got), size)
		}
		if _, err := os.Stat(file + ".part"); err == nil {
			t.Error("a part file was left behind")
		}
		t.Logf("%d bytes uploaded and read back (ETag %s)", size, aws.ToString(out.ETag))
	}
	// No multipart upload is left open (they are billed).
	mp, err := s3c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String("cache-bucket")})
	if err != nil || len(mp.Uploads) != 0 {
		t.Errorf("open multipart uploads: %v %v", mp, err)
	}
}
