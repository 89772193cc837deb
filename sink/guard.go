package sink

import (
	"context"
	"hash/maphash"
	"math/bits"
	"strings"

	"github.com/cespare/xxhash/v2"
	"github.com/scrapeflux/scrapeflux/sink/lineproto"
	"github.com/scrapeflux/scrapeflux/sink/schema"
)

// The InfluxDB 3 schema guard (package schema) sits at a converter's
// commit. A target exposes the same series scrape after scrape, so a
// scrape whose line keys and field keys hash as the last one's did, with
// nothing learnt since, passes without a look; any other is looked at
// line by line, and a line whose shape (table, tag and field names) the
// guard let through before passes on one lookup. Only a line with a new
// shape is decided name by name.

// ServerTeller is a Writer that knows which InfluxDB it writes to.
type ServerTeller interface {
	Server() ServerInfo
	Database() string
}

// SchemaLister is a Writer that can list the tables and columns of its
// InfluxDB 3 database.
type SchemaLister interface {
	ListSchema(ctx context.Context) (map[string][]string, error)
}

// noteServer turns the guard on once the writer knows it writes to
// InfluxDB 3, and the first time reads what the server holds (bounded by
// Config.SchemaListTimeout), before any line is decided.
func (s *Sink) noteServer() {
	if s.schema == nil {
		return
	}
	st, ok := s.w.(ServerTeller)
	if !ok {
		return
	}
	si := st.Server()
	if si.API != APIv3 {
		return
	}
	cat := s.cfg.Schema
	first := !cat.Active()
	cat.Activate(si.Build)
	if first {
		l := cat.Limits()
		s.log.Info("InfluxDB 3 schema guard on: lines that would pass the server's limits are held back and counted",
			"build", si.Build, "max_databases", l.Databases, "max_tables", l.Tables, "max_columns_per_table", l.Columns)
	}
	if !s.listed.Swap(true) {
		if sl, ok := s.w.(SchemaLister); ok {
			s.listSchema(sl)
		}
	}
}

// listSchema loads what the server holds of the database, when the
// token may read it; else the guard learns from writes alone.
func (s *Sink) listSchema(sl SchemaLister) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.listTimeout())
	defer cancel()
	tables, err := sl.ListSchema(ctx)
	if err != nil {
		s.log.Info("cannot list the InfluxDB 3 database's tables and columns; the schema guard learns them from writes", "database", s.schema.Name(), "err", err)
		return
	}
	s.schema.Known(tables, func(n string) []byte { return lineproto.AppendEscaped(nil, n, true) },
		func(n string) []byte { return lineproto.AppendEscaped(nil, n, false) })
	s.log.Info("InfluxDB 3 schema read for the guard", "database", s.schema.Name(), "tables", len(tables))
}

// schemaDB is the guard of the sink's database, nil while off.
func (s *Sink) schemaDB() *schema.DB {
	if s.schema == nil || !s.cfg.Schema.Active() {
		return nil
	}
	return s.schema
}

var shapeSeed = maphash.MakeSeed()

// scrapeShape hashes what decides a scrape's schema: its line keys and
// field keys, in order.
func scrapeShape(sc *scratch) uint64 {
	return maphash.Bytes(shapeSeed, sc.keys) ^ bits.RotateLeft64(maphash.Bytes(shapeSeed, sc.names), 17)
}

// shapeOf hashes a line's table, tag and field names.
func shapeOf(l *schema.Line) uint64 {
	h := xxhash.Sum64(l.Table)
	for _, t := range l.Tags {
		h = bits.RotateLeft64(h, 7) ^ xxhash.Sum64(t)
	}
	h ^= 0x9e3779b97f4a7c15
	for _, f := range l.Fields {
		h = bits.RotateLeft64(h, 11) ^ xxhash.Sum64(f)
	}
	return h
}

// lineOf reads a written line for the guard.
func lineOf(ln []byte, l *schema.Line) {
	key, fields := lineproto.SplitLine(ln)
	l.Tags, l.Fields = l.Tags[:0], l.Fields[:0]
	lineproto.SplitKey(key, func(p []byte, tag bool) {
		if tag {
			l.Tags = append(l.Tags, p)
		} else {
			l.Table = p
		}
	})
	lineproto.FieldKeys(fields, func(k []byte) { l.Fields = append(l.Fields, k) })
	l.Shape = shapeOf(l)
}

// guardLine decides line pl of the scrape: it returns whether the whole
// line is held, marking held fields, and the samples held.
func (c *converter) guardLine(db *schema.DB, sc *scratch, pl *pendingLine) (whole bool, held int) {
	l := &c.guard
	l.Tags, l.Fields = l.Tags[:0], l.Fields[:0]
	lineproto.SplitKey(sc.keys[pl.key:pl.keyEnd], func(p []byte, tag bool) {
		if tag {
			l.Tags = append(l.Tags, p)
		} else {
			l.Table = p
		}
	})
	for fi := pl.head; fi >= 0; fi = sc.fields[fi].next {
		f := &sc.fields[fi]
		l.Fields = append(l.Fields, sc.names[f.key:f.keyEnd])
	}
	l.Shape = shapeOf(l)
	if db.Admitted(l.Shape) {
		return false, 0
	}
	d := db.Admit(l)
	switch {
	case d.Line:
		held = len(l.Fields)
	case d.Fields > 0:
		i := 0
		for fi := pl.head; fi >= 0; fi = sc.fields[fi].next {
			sc.fields[fi].held = l.Held[i]
			i++
		}
		held = d.Fields
	default:
		return false, 0
	}
	db.Hold(string(l.Table), held, d.Reason, c.targetName())
	c.schemaHeld += int64(held)
	c.schemaWhy = "table " + string(l.Table) + ": " + d.Reason
	return d.Line, held
}

// targetName names the converter's target by its identity tags.
func (c *converter) targetName() string {
	var b strings.Builder
	for i, t := range c.ident {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(t.Key + "=" + t.Value)
	}
	return b.String()
}

// learnRefusal tells the guard of a line InfluxDB refused; it reports
// whether the refusal named a schema limit.
func (s *Sink) learnRefusal(ln []byte, msg string) bool {
	if s.schema == nil || !schema.IsLimit(msg) {
		return false
	}
	var l *schema.Line
	if ln != nil {
		l = &schema.Line{}
		lineOf(ln, l)
	}
	return s.schema.Learn(l, msg)
}
