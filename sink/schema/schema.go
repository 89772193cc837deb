// Package schema keeps what an InfluxDB 3 server's catalog holds of the
// tables and columns scrapeflux writes, so that a line that would create
// a table or a column past the server's limits is held back, counted and
// said, rather than sent to be refused.
//
// InfluxDB 3 refuses a write that would grow its catalog past a limit
// (influxdb3_catalog/src/error.rs): 422 or, with accept_partial, a
// refused line saying "Update to schema would exceed number of columns
// per table limit of 500 columns", "... number of tables limit:
// attempted to create table but already have N table(s) (limit: L)" or
// "Adding a new database would exceed limit of 5 databases". Core's
// limits are fixed (5 databases, 2,000 tables across them, 500 columns a
// table with its time column); Enterprise's default to 100, 4,000 and 500
// and can be changed. Columns are never taken away: a table that is full
// stays full.
//
// A Catalog is shared by the sinks of one server; each sink writes one
// database (a DB). The guard learns a table's columns from what it
// admits, from the server's own listing at start where the token allows
// it, and from every refusal that names a limit: a line refused for a
// limit marks its table (or the server, or the database) full, and no
// line of the same shape is sent to that refusal again.
package schema

import (
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// Limits of a server's catalog; 0: not known (learned from refusals).
type Limits struct {
	// Databases the server holds at most; Tables across all of them;
	// Columns of one table, its time column included.
	Databases, Tables, Columns int
}

// ProductLimits are the limits of a build as /ping names it: Core's,
// fixed; Enterprise's defaults (its --num-database-limit,
// --num-table-limit and --num-total-columns-per-table-limit change them).
// Other builds: none known.
func ProductLimits(build string) Limits {
	switch {
	case strings.EqualFold(build, "Core"):
		return Limits{Databases: 5, Tables: 2000, Columns: 500}
	case strings.EqualFold(build, "Enterprise"):
		return Limits{Databases: 100, Tables: 4000, Columns: 500}
	}
	return Limits{}
}

// Catalog is what is known of one server's catalog. Safe for concurrent
// use.
type Catalog struct {
	override Limits // set by configuration; win over the product's

	active atomic.Bool
	epoch  atomic.Uint64 // bumped when something is learnt that holds what passed before

	mu         sync.RWMutex // guards the fields below and every DB's
	limits     Limits
	build      string
	tables     int  // tables known, across databases
	tablesFull bool // the server refused a table for its tables limit
	dbs        map[string]*DB
}

// NewCatalog makes a catalog; override's non-zero limits replace the
// product's.
func NewCatalog(override Limits) *Catalog {
	return &Catalog{override: override, dbs: map[string]*DB{}}
}

// Activate turns the guard on for a server of build (InfluxDB 3's "Core"
// or "Enterprise"; "" when unknown): its limits apply from now on. Again
// with the same build, nothing changes.
func (c *Catalog) Activate(build string) {
	if c.active.Load() && build == c.Build() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	l := ProductLimits(build)
	if c.override.Databases > 0 {
		l.Databases = c.override.Databases
	}
	if c.override.Tables > 0 {
		l.Tables = c.override.Tables
	}
	if c.override.Columns > 0 {
		l.Columns = c.override.Columns
	}
	// Limits a refusal taught stay.
	c.limits = Limits{Databases: learnt(c.limits.Databases, l.Databases), Tables: learnt(c.limits.Tables, l.Tables), Columns: learnt(c.limits.Columns, l.Columns)}
	c.build = build
	c.active.Store(true)
	c.clearAdmitted()
}

// learnt keeps a limit a refusal taught (smaller than the product's).
func learnt(have, product int) int {
	if have > 0 && (product == 0 || have < product) {
		return have
	}
	return product
}

// Active reports whether the guard applies (the server is InfluxDB 3).
func (c *Catalog) Active() bool { return c != nil && c.active.Load() }

// Epoch changes whenever the guard learns something that may hold back
// lines it let through before.
func (c *Catalog) Epoch() uint64 { return c.epoch.Load() }

// Build is the build the guard was activated for.
func (c *Catalog) Build() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.build
}

// Limits in force.
func (c *Catalog) Limits() Limits {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.limits
}

// Database returns the state of database name, made on first use.
func (c *Catalog) Database(name string) *DB {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d, ok := c.dbs[name]; ok {
		return d
	}
	d := &DB{cat: c, name: name, tables: map[string]*table{}, admitted: map[uint64]struct{}{}, refusedShapes: map[uint64]struct{}{}, held: map[string]*Held{}}
	c.dbs[name] = d
	return d
}

// Databases lists the databases written, sorted.
func (c *Catalog) Databases() []*DB {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]*DB, 0, len(c.dbs))
	for _, d := range c.dbs {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// clearAdmitted forgets every shape let through: each is asked again.
// c.mu held for writing.
func (c *Catalog) clearAdmitted() {
	for _, d := range c.dbs {
		clear(d.admitted)
	}
	c.epoch.Add(1)
}

// DB is what is known of one database.
type DB struct {
	cat  *Catalog
	name string
	// Under cat.mu:
	tables   map[string]*table
	admitted map[uint64]struct{} // shapes (table, tag and field names) let through whole
	// refusedShapes: shapes of lines the server refused for a limit.
	refusedShapes map[uint64]struct{}
	refused       string // why the server refuses the database ("" : it does not)
	counted       bool   // counted among the server's databases
	held          map[string]*Held
	heldTotal     int64
}

// table is what is known of one table: the hashes of its columns,
// sorted (8 bytes a column; looked up on a new shape only).
type table struct {
	cols []uint64
	full bool // the server refused a column for its limit
}

func newTable(n int) *table {
	t := &table{cols: make([]uint64, 1, 1+n)}
	t.cols[0] = timeColumn
	return t
}

func (t *table) has(h uint64) bool {
	_, ok := slices.BinarySearch(t.cols, h)
	return ok
}

func (t *table) add(h uint64) {
	if i, ok := slices.BinarySearch(t.cols, h); !ok {
		t.cols = slices.Insert(t.cols, i, h)
	}
}

// Held counts the samples of one table held back.
type Held struct {
	Table   string
	Samples int64
	Reason  string // the latest
	Target  string // the target that brought the latest
}

// maxHeldTables bounds the tables counted apart; others count as "_other".
const maxHeldTables = 1000

// Name of the database.
func (d *DB) Name() string { return d.name }

// Admitted reports whether lines of shape h passed whole since the guard
// last learnt something: such a line needs no other look.
func (d *DB) Admitted(h uint64) bool {
	d.cat.mu.RLock()
	_, ok := d.admitted[h]
	d.cat.mu.RUnlock()
	return ok
}

// Line is one line as the guard decides it: its table, tag keys and
// field keys as written (escaped), and Shape, a hash of them all.
type Line struct {
	Table  []byte
	Tags   [][]byte
	Fields [][]byte
	Shape  uint64
	// Held: which fields the decision holds back (Admit fills it, one
	// per field).
	Held []bool
}

// Decision is the guard's word on a line.
type Decision struct {
	// Line: the whole line is held (a new table, a new tag, the
	// database refused); else Fields of its fields are (Line.Held says
	// which).
	Line   bool
	Fields int
	Reason string
}

// Admit decides l: what fits is let through and learnt as created; what
// would pass a limit is held (l.Held marks the fields). A line all let
// through is remembered by its shape.
func (d *DB) Admit(l *Line) Decision {
	c := d.cat
	c.mu.Lock()
	defer c.mu.Unlock()
	l.Held = l.Held[:0]
	for range l.Fields {
		l.Held = append(l.Held, false)
	}
	if d.refused != "" {
		return Decision{Line: true, Reason: d.refused}
	}
	if _, ok := d.refusedShapes[l.Shape]; ok {
		return Decision{Line: true, Reason: "InfluxDB refused a line of this table with these columns for a schema limit"}
	}
	if !d.counted && c.limits.Databases > 0 && c.countedDBs() >= c.limits.Databases {
		return Decision{Line: true, Reason: "database " + strconv.Quote(d.name) + " would pass the server's limit of " + strconv.Itoa(c.limits.Databases) + " databases"}
	}
	t := d.tables[string(l.Table)]
	if t == nil {
		if c.tablesFull || (c.limits.Tables > 0 && c.tables >= c.limits.Tables) {
			why := "a new table would pass the server's limit of " + strconv.Itoa(c.limits.Tables) + " tables (across databases)"
			if c.limits.Tables == 0 {
				why = "a new table: the server refused one for its tables limit"
			}
			return Decision{Line: true, Reason: why}
		}
	}
	// What the line would add, decided before anything is learnt: a
	// line held whole adds nothing.
	have, full := 1, false // a new table has its time column
	if t != nil {
		have, full = len(t.cols), t.full
	}
	room := -1 // columns the table may still take; -1: no limit known
	if full {
		room = 0
	} else if c.limits.Columns > 0 {
		room = max(0, c.limits.Columns-have)
	}
	var newTag []uint64
	for _, tg := range l.Tags {
		if h := xxhash.Sum64(tg); t == nil || !t.has(h) {
			newTag = append(newTag, h)
			if room >= 0 && len(newTag) > room {
				return Decision{Line: true, Reason: "tag " + strconv.Quote(string(tg)) + " would be a column past " + d.columnsWhy(full)}
			}
		}
	}
	if room >= 0 {
		room -= len(newTag)
	}
	dec := Decision{}
	kept := 0
	var newField []uint64
	for i, f := range l.Fields {
		h := xxhash.Sum64(f)
		switch {
		case t != nil && t.has(h), slices.Contains(newField, h):
			kept++
		case room < 0 || len(newField) < room:
			newField = append(newField, h)
			kept++
		default:
			l.Held[i] = true
			dec.Fields++
			if dec.Reason == "" {
				dec.Reason = "field " + strconv.Quote(string(f)) + " would be a column past " + d.columnsWhy(full)
			}
		}
	}
	if kept == 0 {
		return Decision{Line: true, Reason: dec.Reason}
	}
	if t == nil {
		t = newTable(len(newTag) + len(newField))
		d.tables[string(l.Table)] = t
		c.tables++
		d.counted = true
	}
	for _, h := range newTag {
		t.add(h)
	}
	for _, h := range newField {
		t.add(h)
	}
	if dec.Fields == 0 {
		d.admitted[l.Shape] = struct{}{}
	}
	return dec
}

var timeColumn = xxhash.Sum64String("time")

func (d *DB) columnsWhy(full bool) string {
	if l := d.cat.limits.Columns; l > 0 && !full {
		return "the server's limit of " + strconv.Itoa(l) + " columns per table"
	}
	return "the columns InfluxDB takes for this table (it refused one for its limit)"
}

// countedDBs: databases with a table known. c.mu held.
func (c *Catalog) countedDBs() int {
	n := 0
	for _, d := range c.dbs {
		if d.counted {
			n++
		}
	}
	return n
}

// Hold counts samples of table held back, brought by target.
func (d *DB) Hold(tableName string, samples int, reason, target string) {
	c := d.cat
	c.mu.Lock()
	defer c.mu.Unlock()
	h := d.held[tableName]
	if h == nil {
		if len(d.held) >= maxHeldTables {
			tableName = "_other"
			h = d.held[tableName]
		}
		if h == nil {
			h = &Held{Table: tableName}
			d.held[tableName] = h
		}
	}
	h.Samples += int64(samples)
	h.Reason, h.Target = reason, target
	d.heldTotal += int64(samples)
}

// Usage is what the guard knows of a database.
type Usage struct {
	Database string
	// Tables known, and the columns of the widest.
	Tables, WidestColumns int
	Widest                string
	// Refused: why the server refuses the database, if it does.
	Refused string
	// Held: samples held back, in all and by table (sorted by table).
	HeldSamples int64
	Held        []Held
}

// Usage reports what is known of d.
func (d *DB) Usage() Usage {
	c := d.cat
	c.mu.RLock()
	defer c.mu.RUnlock()
	u := Usage{Database: d.name, Tables: len(d.tables), Refused: d.refused, HeldSamples: d.heldTotal}
	for name, t := range d.tables {
		if n := len(t.cols); n > u.WidestColumns || (n == u.WidestColumns && name < u.Widest) {
			u.WidestColumns, u.Widest = n, name
		}
	}
	for _, h := range d.held {
		u.Held = append(u.Held, *h)
	}
	sort.Slice(u.Held, func(i, j int) bool { return u.Held[i].Table < u.Held[j].Table })
	return u
}

// Known loads what the server lists of the database: each table's
// columns (names as the server has them; esc writes them as a line
// would). Tables and columns already known stay.
func (d *DB) Known(tables map[string][]string, escTable, escColumn func(string) []byte) {
	c := d.cat
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, cols := range tables {
		key := string(escTable(name))
		t := d.tables[key]
		if t == nil {
			t = newTable(len(cols))
			d.tables[key] = t
			c.tables++
		}
		for _, col := range cols {
			t.add(xxhash.Sum64(escColumn(col)))
		}
	}
	if len(tables) > 0 {
		d.counted = true
	}
	c.clearAdmitted()
}

// The words of InfluxDB 3's refusals (influxdb3_catalog/src/error.rs).
var (
	reColumns = regexp.MustCompile(`Update to schema would exceed number of (?:tag )?columns per table limit of (\d+) columns`)
	reTables  = regexp.MustCompile(`Update to schema would exceed number of tables limit: attempted to create table but already have (\d+) table\(s\) \(limit: (\d+)\)`)
	reDBs     = regexp.MustCompile(`Adding a new database would exceed limit of (\d+) databases`)
)

// IsLimit reports whether a refusal names a schema limit.
func IsLimit(msg string) bool {
	return reColumns.MatchString(msg) || reTables.MatchString(msg) || reDBs.MatchString(msg)
}

// RefusesDatabase reports whether msg refuses the whole database.
func RefusesDatabase(msg string) bool { return reDBs.MatchString(msg) }

// Learn takes in a refusal of l (nil when the answer named no line) by
// the server for msg; it reports whether msg named a schema limit. What
// it learns holds back every line that would meet the same refusal.
func (d *DB) Learn(l *Line, msg string) bool {
	c := d.cat
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case reDBs.MatchString(msg):
		n, _ := strconv.Atoi(reDBs.FindStringSubmatch(msg)[1])
		c.limits.Databases = n
		d.refused = "InfluxDB refuses database " + strconv.Quote(d.name) + ": it holds its limit of " + strconv.Itoa(n) + " databases"
		d.counted = false
	case reTables.MatchString(msg):
		m := reTables.FindStringSubmatch(msg)
		have, _ := strconv.Atoi(m[1])
		n, _ := strconv.Atoi(m[2])
		c.limits.Tables, c.tablesFull = n, true
		c.tables = max(c.tables, have)
		if l != nil {
			// The table was not made: it is new to the server.
			if _, ok := d.tables[string(l.Table)]; ok {
				delete(d.tables, string(l.Table))
				c.tables--
			}
			d.refusedShapes[l.Shape] = struct{}{}
		}
	case reColumns.MatchString(msg):
		n, _ := strconv.Atoi(reColumns.FindStringSubmatch(msg)[1])
		if !strings.Contains(msg, "tag columns") {
			c.limits.Columns = n // the server's word
		}
		if l != nil {
			if t := d.tables[string(l.Table)]; t != nil {
				t.full = true
			}
			d.refusedShapes[l.Shape] = struct{}{}
		}
	default:
		return false
	}
	c.clearAdmitted()
	return true
}
