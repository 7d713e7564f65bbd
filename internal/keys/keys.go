// Package keys derives the Redis names that belong to a lock: its fencing counter, its release channel and its
// keyspace-notification channel.
//
// In Redis Cluster a script may only touch keys of one hash slot, and a sharded channel lives on the node that
// owns its slot, so every name derived from a lock key must hash to the lock key's slot. Redis hashes only the
// hash tag of a key when it has one: the text between the first '{' and the first '}' after it, if that text is
// not empty. The rule used here:
//
//   - the key has a hash tag: append the suffix ("orders{42}" → "orders{42}:fence"); the tag is unchanged;
//   - the key has no tag and no '}': wrap it ("job" → "{job}:fence"); the tag is the whole key;
//   - the key has no tag but contains '}' ("a}b", "x{}y"): no tag can equal the key, so prefix a short tag
//     chosen to hash to the same slot ("a}b" → "{kw7931}a}b:fence").
package keys

import (
	"strconv"
	"strings"
	"sync"
)

// Names are the Redis names derived from one lock key.
type Names struct {
	// Lock is the lock key itself; its value is the holder's token.
	Lock string
	// Fence is the fencing counter.
	Fence string
	// Channel is the channel on which the release script announces a release.
	Channel string
	// Queue is the sorted set of processes waiting for the lock, in order of arrival.
	Queue string
}

// For returns the names derived from the lock key key.
func For(key string) Names {
	return Names{Lock: key, Fence: Derive(key, "fence"), Channel: Derive(key, "released"), Queue: Derive(key, "queue")}
}

// Derive returns the name key:suffix, arranged to hash to key's cluster slot.
func Derive(key, suffix string) string {
	switch {
	case HashTag(key) != "":
		return key + ":" + suffix
	case !strings.Contains(key, "}"):
		return "{" + key + "}:" + suffix
	default:
		return "{" + slotTag(Slot(key)) + "}" + key + ":" + suffix
	}
}

// KeyspaceChannel returns the channel on which a server with keyspace notifications on announces events for key
// in database db.
func KeyspaceChannel(db int, key string) string {
	return "__keyspace@" + strconv.Itoa(db) + "__:" + key
}

// HashTag returns the part of key that Redis Cluster hashes when it is not the whole key, or "" when it is.
func HashTag(key string) string {
	open := strings.IndexByte(key, '{')
	if open < 0 {
		return ""
	}
	closing := strings.IndexByte(key[open+1:], '}')
	if closing <= 0 {
		return ""
	}
	return key[open+1 : open+1+closing]
}

// Slot returns the Redis Cluster hash slot of key (CRC16/XMODEM of its hash tag or of the whole key, mod 16384).
func Slot(key string) int {
	if tag := HashTag(key); tag != "" {
		key = tag
	}
	return int(crc16(key) % 16384)
}

var (
	slotTagsOnce sync.Once
	slotTags     [16384]string
)

// slotTag returns a short tag, free of braces, whose slot is slot.
func slotTag(slot int) string {
	slotTagsOnce.Do(func() {
		// About 170,000 CRCs of short strings fill every slot: a few milliseconds, once, and only for keys
		// that contain '}' without a hash tag.
		for filled, i := 0, 0; filled < len(slotTags); i++ {
			tag := "kw" + strconv.Itoa(i)
			if s := crc16(tag) % 16384; slotTags[s] == "" {
				slotTags[s] = tag
				filled++
			}
		}
	})
	return slotTags[slot]
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), the checksum Redis Cluster uses for slots.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
