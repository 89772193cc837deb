package scrape

import (
	"slices"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// Shard says which targets this replica scrapes when several replicas
// share the work: rendezvous (highest-random-weight) hashing of the target
// key over the live members, each target owned by the Replication members
// that score highest. Every replica computes the same owners from the same
// member list, without talking to the others, and a membership change
// moves only the targets whose owners changed (about 1/N of them when one
// of N members comes or goes).
//
// Safe for concurrent use. The member list comes from outside (cmd feeds it
// from the Consul cluster watch); until the first one, and whenever this
// replica is missing from it (its own check failed), the replica counts
// itself in: scraping a target twice writes identical points, missing it
// writes none.
type Shard struct {
	self        string
	replication int

	mu      sync.Mutex // guards the fields below
	members []string   // sorted, self included
	changed chan struct{}
	changes int64
}

// NewShard makes a shard for the replica named self, with each target
// scraped by replication replicas.
func NewShard(self string, replication int) *Shard {
	return &Shard{self: self, replication: max(replication, 1), members: []string{self}, changed: make(chan struct{})}
}

// Self is this replica's name.
func (s *Shard) Self() string { return s.self }

// SetMembers replaces the live member list. An identical list is ignored.
func (s *Shard) SetMembers(members []string) {
	m := slices.Clone(members)
	if !slices.Contains(m, s.self) {
		m = append(m, s.self)
	}
	slices.Sort(m)
	m = slices.Compact(m)
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Equal(m, s.members) {
		return
	}
	s.members = m
	s.changes++
	close(s.changed)
	s.changed = make(chan struct{})
}

// Members returns the member list in use and a channel closed at its next
// change.
func (s *Shard) Members() ([]string, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.members, s.changed
}

// Changes counts membership changes seen.
func (s *Shard) Changes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changes
}

// Owners returns the members that scrape the target with key, best first.
func (s *Shard) Owners(key string) []string {
	members, _ := s.Members()
	return Owners(key, members, s.replication)
}

// Owns reports whether this replica scrapes the target with key.
func (s *Shard) Owns(key string) bool {
	return slices.Contains(s.Owners(key), s.self)
}

// Owners ranks members for key by rendezvous hashing and returns the r
// highest (all of them when there are fewer). The score of a member is a
// 64-bit hash of the member name and the key, so the ranking is the same
// in every process.
func Owners(key string, members []string, r int) []string {
	type scored struct {
		member string
		score  uint64
	}
	top := make([]scored, 0, r+1)
	for _, m := range members {
		d := xxhash.New()
		_, _ = d.WriteString(m)
		_, _ = d.Write([]byte{0})
		_, _ = d.WriteString(key)
		sc := scored{m, d.Sum64()}
		i := len(top)
		for i > 0 && (top[i-1].score < sc.score || top[i-1].score == sc.score && top[i-1].member > sc.member) {
			i--
		}
		if i >= r {
			continue
		}
		top = slices.Insert(top, i, sc)
		if len(top) > r {
			top = top[:r]
		}
	}
	out := make([]string, len(top))
	for i, t := range top {
		out[i] = t.member
	}
	return out
}
