package service

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/storage"
)

// TestConnectError_NoSpace: a full disk is ResourceExhausted with a
// message that tells the caller what to do and names no server path.
func TestConnectError_NoSpace(t *testing.T) {
	const path = "/srv/ldm/data/scan/00000000000000004096.data"
	cause := &os.PathError{Op: "write", Path: path, Err: syscall.ENOSPC}
	err := connectError(fmt.Errorf("volume %q: storage: %w (%w)", "scan", cause, storage.ErrNoSpace))
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("connectError = %T %v, want a *connect.Error", err, err)
	}
	if ce.Code() != connect.CodeResourceExhausted {
		t.Fatalf("code %v, want ResourceExhausted", ce.Code())
	}
	msg := ce.Message()
	if strings.Contains(msg, "/srv") || strings.Contains(msg, ".data") || strings.Contains(msg, "scan") {
		t.Fatalf("message %q names a server path or file", msg)
	}
	if !strings.Contains(msg, "disk is full") || !strings.Contains(msg, "free space") {
		t.Fatalf("message %q does not say the disk is full and what to do", msg)
	}
}
