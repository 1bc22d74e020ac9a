package payload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"golang.org/x/sync/errgroup"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
)

// incoming is the image arriving in its partial file, and the local work
// that follows it: the SHA-256 of the file and, for a decompressed image, the
// decoding. Both read the contiguous prefix of fully arrived ranges as it
// grows, so that little is left to do when the last range lands; when
// decoding, the hash is of the bytes the decoder reads, not a second read.
type incoming struct {
	file *os.File
	// remoteSum is the SHA-256 the host computed; remoteImageSum that of
	// the decompressed image, when the host computed it.
	remoteSum      string
	remoteImageSum string
	// hashImage is set when the decoded image is hashed here; decodes when
	// the file is decompressed as it arrives.
	hashImage, decodes bool

	cancel   context.CancelFunc
	hashing  errgroup.Group
	localSum string
	decoding errgroup.Group
	decoded  decodedImage
	// fetched is when the download and the host's checksum ended;
	// decodedAt when the decoding did.
	fetched, decodedAt time.Time
}

// decodedImage is the image decodeSparse wrote; sum is empty when it was not
// hashed here.
type decodedImage struct {
	size  int64
	sum   string
	first []byte
}

// stop ends the local work, waits for it and closes the file. It may be
// called more than once.
func (d *incoming) stop() {
	d.cancel()
	d.hashing.Wait()
	d.decoding.Wait()
	d.file.Close()
}

// startLocal starts the work that follows the download: the SHA-256 of the
// file and, when decompressing, the decoding, which feeds that hash the
// bytes it reads. A decoder that fails leaves the rest of the file to the
// hash, so that a corrupted transfer is reported as such.
func (d *incoming) startLocal(ctx context.Context, tracker *prefixTracker, decodeTo string) {
	pr := &prefixReader{ctx: ctx, t: tracker, f: d.file}
	if decodeTo == "" {
		d.hashing.Go(func() (err error) {
			d.localSum, err = hashReader(pr)
			return err
		})
		return
	}
	d.decodes = true
	h := sha256.New()
	hashed := make(chan error, 1)
	d.hashing.Go(func() error {
		err := <-hashed
		d.localSum = hex.EncodeToString(h.Sum(nil))
		return err
	})
	d.decoding.Go(func() (err error) {
		im := &d.decoded
		im.size, im.sum, im.first, err = decodeImage(ctx, io.TeeReader(pr, h), decodeTo, d.hashImage)
		d.decodedAt = time.Now()
		// What the decoder did not read (after a failure) still counts.
		_, herr := io.CopyBuffer(h, pr, make([]byte, 1<<20))
		hashed <- herr
		return err
	})
}

// fetch downloads the image into n.download while the host computes its
// SHA-256, and starts the local work that follows the download. When it
// returns without error the download and the host's SHA-256 are complete;
// the caller waits for the local work (verify, checkImage) and stops it.
func (r *run) fetch(ctx context.Context, image string, info imageInfo, n localNames) (*incoming, error) {
	f, err := os.OpenFile(n.download, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o644)
	if err != nil {
		return nil, phaseErr(PhaseDownload, fmt.Errorf("creating %s: %w", n.download, err), nil)
	}
	r.partials = append(r.partials, n.download)
	tracker := newPrefixTracker(info.size)
	localCtx, cancel := context.WithCancel(ctx)
	// The host hashes the image too when it can decompress it.
	remoteImage := n.decompress && info.zstd
	d := &incoming{file: f, cancel: cancel, hashImage: r.cfg.HashImageLocally || !remoteImage}
	decodeTo := ""
	if n.decompress {
		r.partials = append(r.partials, n.finalTmp)
		decodeTo = n.finalTmp
	}
	d.startLocal(localCtx, tracker, decodeTo)

	// The transfer and the host's checksum end together: the first to fail
	// cancels the other.
	transfer, tctx := errgroup.WithContext(ctx)
	transfer.Go(func() error {
		defer r.timer.track(PhaseChecksum)()
		s, err := remoteSHA256(tctx, r.comm, sha256Command(r.cfg, image, remoteImage), remoteImage)
		if err != nil && tctx.Err() == nil {
			return phaseErr(PhaseChecksum, fmt.Errorf("computing the image's SHA-256 on the host: %w; check that sha256sum (and zstd) work on the host and run the build again, or set hash_image_locally = true", err), nil)
		}
		// When tctx ended, whatever ended it reports why.
		d.remoteSum, d.remoteImageSum = s.file, s.image
		return nil
	})
	transfer.Go(func() error {
		// The downloader fails tracker with its error, so the local work
		// ends too.
		return phaseErr(PhaseDownload, r.download(tctx, image, info, f, tracker, !n.zst && info.zstd), nil)
	})
	if err := transfer.Wait(); err != nil {
		d.stop()
		return nil, err
	}
	d.fetched = time.Now()
	if d.remoteSum == "" {
		// ctx ended after the download completed.
		d.stop()
		err := ctx.Err()
		if err == nil {
			err = errors.New("the host's checksum ended without a result; run the build again")
		}
		return nil, phaseErr(PhaseChecksum, err, nil)
	}
	return d, nil
}

// sessionReserve is how many of sshd's sessions the download leaves to
// others: the checksum running alongside it, a periodic command of the caller
// (the builder's heartbeat) and one spare.
const sessionReserve = 3

// channelsFor is how many channels to open: download_channels, but few enough
// that, with sessionReserve others, they stay within sshd's MaxSessions (10
// unless configured): opening one session too many makes Packer's SSH
// communicator drop the whole connection, and every command on it.
func channelsFor(want, maxSessions int) int {
	if maxSessions <= 0 {
		maxSessions = 10
	}
	if limit := maxSessions - sessionReserve; want > limit {
		want = max(limit, 1)
	}
	return want
}

// checksumAttempts is how often the host's checksum runs when the SSH
// connection drops under it.
const checksumAttempts = 4

// remoteSums are the SHA-256 sums the host computed: of the file, and of
// the image decompressed from it when asked for.
type remoteSums struct{ file, image string }

// remoteSHA256 runs sha256Command cmd for the SHA-256 of the host's image
// file and, with decompressed, of the image zstd decompresses from it. A
// dropped connection runs it again (the communicator reconnects).
func remoteSHA256(ctx context.Context, comm packersdk.Communicator, cmd string, decompressed bool) (remoteSums, error) {
	var out string
	var err error
	for attempt := 1; ; attempt++ {
		out, err = remotecmd.Output(ctx, comm, cmd)
		if err == nil || ctx.Err() != nil || attempt == checksumAttempts || !remotecmd.Dropped(err) {
			break
		}
		select {
		case <-time.After(time.Duration(attempt) * time.Second):
		case <-ctx.Done():
		}
	}
	if err != nil {
		return remoteSums{}, err
	}
	var s remoteSums
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "image" && decompressed:
			s.image = f[1]
		case len(f) > 0 && s.file == "" && f[0] != "image":
			s.file = f[0]
		}
	}
	if !isSHA256(s.file) || decompressed && !isSHA256(s.image) {
		return remoteSums{}, fmt.Errorf("sha256sum printed %q, not a checksum; check the host's coreutils", strings.TrimSpace(out))
	}
	return s, nil
}

// isSHA256 reports whether s is a hex SHA-256 as sha256sum prints it.
func isSHA256(s string) bool {
	return len(s) == 64 && strings.Trim(s, "0123456789abcdef") == ""
}

// download fetches the remote image into f, telling tracker of every range
// that fully arrived. The caller owns f.
func (r *run) download(ctx context.Context, image string, info imageInfo, f *os.File, tracker *prefixTracker, compress bool) error {
	defer r.timer.track(PhaseDownload)()
	want := r.cfg.DownloadChannels
	if want == 0 {
		want = autoFirstChannels
	}
	channels := channelsFor(want, info.maxSessions)
	how := ""
	if compress {
		how = ", compressed in transit with zstd"
	}
	if channels < r.cfg.DownloadChannels {
		r.ui.Say(fmt.Sprintf("Using %d download channels instead of %d on the communicator's connection: the host's sshd allows %d sessions per connection (MaxSessions)", channels, r.cfg.DownloadChannels, sessionsOr10(info.maxSessions)))
	}
	r.ui.Say(fmt.Sprintf("Downloading %s (%s) over %d SSH channels%s", image, humanBytes(info.size), channels, how))

	pr := newProgressReader()
	pr.interval = 100 * time.Millisecond
	bar := r.ui.TrackProgress(path.Base(image), 0, info.size, pr)
	var drain errgroup.Group
	drain.Go(func() error {
		// Not io.Copy(io.Discard, bar): io.Discard reads 8 KiB at a time, and
		// in a plugin every Read is a call to Packer. The buffer is never
		// written to.
		buf := make([]byte, 4<<20)
		for {
			if _, err := bar.Read(buf); err != nil {
				return nil
			}
		}
	})
	d := &downloader{comm: r.comm, channels: channels, compress: compress, tracker: tracker, progress: pr.Add}
	if r.link != nil {
		d.expected = r.link.expected(info.maxSessions)
		d.more = func(ctx context.Context) []worker {
			return r.link.workers(ctx, r.ui, info.size, info.maxSessions)
		}
	}
	start := time.Now()
	err := d.download(ctx, image, info.size, f)
	pr.Close()
	drain.Wait()
	bar.Close()
	if err != nil {
		return err
	}
	el := time.Since(start)
	again := ""
	if n := d.resumed.Load(); n > 0 {
		again = fmt.Sprintf(", %d resumed after a dropped channel or connection", n)
	}
	if n := d.hedged.Load(); n > 0 {
		again += fmt.Sprintf(", %d asked for again on another connection as they held the decoder back", n)
	}
	if d.gated.Load() > 0 {
		again += "; the download paused while this machine's decoding caught up"
	}
	r.ui.Say(fmt.Sprintf("Downloaded %s in %s (%s/s, %d ranges%s)", humanBytes(info.size), el.Round(100*time.Millisecond), humanBytes(int64(float64(info.size)/max(el.Seconds(), 1e-3))), d.ranges.Load(), again))
	return nil
}

func sessionsOr10(n int) int {
	if n <= 0 {
		return 10
	}
	return n
}
