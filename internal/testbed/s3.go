package testbed

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// The test bed's S3 is moto's, which serves S3 on the same endpoint as EC2.
// It answers under the name of AWS's public S3 endpoint,
// s3.<region>.amazonaws.com (and s3.amazonaws.com), at a port of its own:
// on this machine the name resolves (Testbed.HostsFile) to 127.0.0.1, on
// every host to its gateway, this machine (HostPoolOptions.GatewayNames);
// either way it reaches s3Front, which passes connections on to moto. So
// a URL presigned on this machine works on the hosts, as an S3 URL does
// on an instance.
type s3Front struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup
}

// s3Names are the public S3 endpoint's names for the regions.
func s3Names(regions []string) []string {
	names := []string{"s3.amazonaws.com"}
	for _, r := range regions {
		names = append(names, "s3."+r+".amazonaws.com")
	}
	return names
}

func startS3Front(motoURL string) (*s3Front, error) {
	// Every address: the hosts come through their gateways, which appear
	// as hosts start. Connect only loopback and private sources (the
	// hosts' own addresses).
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		return nil, fmt.Errorf("testbed: S3 endpoint: %w", err)
	}
	f := &s3Front{ln: ln, target: strings.TrimPrefix(motoURL, "http://")}
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

func (f *s3Front) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		if a, ok := c.RemoteAddr().(*net.TCPAddr); !ok || !(a.IP.IsLoopback() || a.IP.IsPrivate()) {
			c.Close()
			continue
		}
		go f.pass(c)
	}
}

func (f *s3Front) pass(c net.Conn) {
	defer c.Close()
	m, err := net.Dial("tcp", f.target)
	if err != nil {
		return
	}
	defer m.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(m, c); m.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(c, m); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

func (f *s3Front) port() int { return f.ln.Addr().(*net.TCPAddr).Port }

func (f *s3Front) Close() error {
	err := f.ln.Close()
	f.wg.Wait()
	return err
}

// S3Endpoint is the URL of the test bed's S3 as the plugin's cache.endpoint
// names it, reachable from this machine and from the hosts.
func (tb *Testbed) S3Endpoint() string {
	return "http://s3." + tb.opts.Regions[0] + ".amazonaws.com:" + strconv.Itoa(tb.s3.port())
}

// S3Client is an S3 client for moto (directly: no record, no faults), to
// create buckets and look at objects.
func (tb *Testbed) S3Client(ctx context.Context) *s3.Client {
	cfg := aws.Config{
		Region:      tb.opts.Regions[0],
		Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", ""),
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(tb.moto.url)
		o.UsePathStyle = true
	})
}

// s3Host is the hosts file entry of the S3 names.
const s3Host = "~s3"

// setStatic keeps lines in the hosts file under key, beside the instances'.
func (w *watcher) setStatic(key string, lines []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dns[key] = lines
	if w.hostsPath != "" {
		if err := writeHostsFile(w.hostsPath, w.dns); err != nil {
			w.logf("watcher: writing %s: %v", w.hostsPath, err)
		}
	}
}
