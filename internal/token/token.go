// Package token makes the values that keyward stores under a lock key: 128 random bits, text-encoded, optionally
// followed by a space and metadata about the holder (by default its host and process id), so that an operator can
// see who holds a lock. The whole value is what release and refresh compare.
package token

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
)

// New returns a fresh value: a random token, then " " + metadata when metadata is not empty.
func New(metadata string) string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error (it crashes the program instead).
	t := base64.RawURLEncoding.EncodeToString(b[:])
	if metadata == "" {
		return t
	}
	return t + " " + metadata
}

// Holder is what a lock value says about its holder.
type Holder struct {
	// Token is the random part.
	Token string
	// Metadata is the rest, "" when there is none.
	Metadata string
	// Fields are the key=value pairs of Metadata (such as host and pid).
	Fields map[string]string
}

// Parse splits a lock value into its parts. Values written by other libraries (redsync's, for example) parse
// as a Token with no metadata.
func Parse(value string) Holder {
	t, meta, _ := strings.Cut(value, " ")
	h := Holder{Token: t, Metadata: meta}
	for _, f := range strings.Fields(meta) {
		if k, v, ok := strings.Cut(f, "="); ok {
			if h.Fields == nil {
				h.Fields = map[string]string{}
			}
			h.Fields[k] = v
		}
	}
	return h
}

// PID returns the holder's process id from its metadata, if it has one.
func (h Holder) PID() (int, bool) {
	pid, err := strconv.Atoi(h.Fields["pid"])
	return pid, err == nil
}

// DefaultMetadata returns "host=<hostname> pid=<pid>" for this process.
var DefaultMetadata = sync.OnceValue(func() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return fmt.Sprintf("host=%s pid=%d", strings.ReplaceAll(host, " ", "_"), os.Getpid())
})
