//go:build unix

package embedded

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// lockFile is the file in a data dir whose lock a running server holds.
const lockFile = ".leaseagent.lock"

// lockDataDir takes an exclusive lock on dir for as long as the returned
// file stays open, or fails if another process (or another server in this
// one) holds it. The operating system drops the lock when its holder
// dies, kill -9 included, so a crash never leaves a dir locked.
func lockDataDir(dir string) (io.Closer, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("embedded: data dir %s: lock: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("embedded: data dir %s is in use by another running server (it holds %s); give each server a data dir of its own", dir, lockFile)
		}
		return nil, fmt.Errorf("embedded: data dir %s: lock: %w", dir, err)
	}
	return f, nil
}
