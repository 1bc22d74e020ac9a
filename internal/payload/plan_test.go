package payload

import (
	"crypto/ed25519"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestChooseLink(t *testing.T) {
	for _, tc := range []struct {
		rtt                   time.Duration
		conns, channels, ms   int
		wantConns, wantPerCon int
	}{
		// A LAN: one connection's window carries 2 Gbit/s.
		{rtt: 300 * time.Microsecond, wantConns: 1, wantPerCon: 2},
		// 40 ms: 10 MB in flight, 3 connections of 4 MiB.
		{rtt: 40 * time.Millisecond, wantConns: 3, wantPerCon: 3},
		// 80 ms: 20 MB in flight.
		{rtt: 80 * time.Millisecond, wantConns: 5, wantPerCon: 3},
		// Far away: capped at maxAutoConnections.
		{rtt: 300 * time.Millisecond, wantConns: maxAutoConnections, wantPerCon: 6},
		// Set by the user.
		{rtt: 80 * time.Millisecond, conns: 2, channels: 8, wantConns: 2, wantPerCon: 8},
		// sshd's MaxSessions caps the channels of a connection of our own.
		{rtt: 80 * time.Millisecond, conns: 2, channels: 32, ms: 10, wantConns: 2, wantPerCon: 9},
	} {
		c, p := chooseLink(tc.rtt, tc.conns, tc.channels, tc.ms)
		if c != tc.wantConns || p != tc.wantPerCon {
			t.Errorf("chooseLink(%v, %d, %d, %d) = %d connections × %d channels, want %d × %d", tc.rtt, tc.conns, tc.channels, tc.ms, c, p, tc.wantConns, tc.wantPerCon)
		}
	}
}

func TestHostKeyPinRefusesAnotherKey(t *testing.T) {
	a, _ := ssh.NewPublicKey(ed25519Pub(1))
	b, _ := ssh.NewPublicKey(ed25519Pub(2))
	var p hostKeyPin
	if err := p.check(a); err != nil {
		t.Fatal(err)
	}
	if err := p.check(a); err != nil {
		t.Fatalf("the same key again: %v", err)
	}
	if err := p.check(b); err == nil {
		t.Fatal("another host key was accepted")
	}
}

func ed25519Pub(seed byte) ed25519.PublicKey {
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	return ed25519.NewKeyFromSeed(s).Public().(ed25519.PublicKey)
}
