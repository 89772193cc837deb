package schema

import (
	"fmt"
	"strings"
	"testing"
)

func line(table string, tags, fields []string) *Line {
	l := &Line{Table: []byte(table)}
	for _, t := range tags {
		l.Tags = append(l.Tags, []byte(t))
	}
	for _, f := range fields {
		l.Fields = append(l.Fields, []byte(f))
	}
	l.Shape = uint64(len(table)*1000 + len(tags)*100 + len(fields)) // distinct enough here
	for _, b := range table + strings.Join(tags, ",") + strings.Join(fields, ",") {
		l.Shape = l.Shape*31 + uint64(b)
	}
	return l
}

func TestProductLimitsAndOverride(t *testing.T) {
	c := NewCatalog(Limits{Tables: 3000})
	if c.Active() {
		t.Fatal("active before Activate")
	}
	c.Activate("Enterprise")
	if l := c.Limits(); l != (Limits{Databases: 100, Tables: 3000, Columns: 500}) {
		t.Errorf("Enterprise with --influx3-max-tables 3000: %+v", l)
	}
	c.Activate("Core")
	if l := c.Limits(); l != (Limits{Databases: 5, Tables: 3000, Columns: 500}) {
		t.Errorf("Core with --influx3-max-tables 3000: %+v", l)
	}
	if l := ProductLimits("Cloud"); l != (Limits{}) {
		t.Errorf("unknown build: %+v", l)
	}
}

// A line held whole teaches nothing: its tags and table are not counted
// as made, so the columns left stay for lines that fit.
func TestHeldLineAddsNothing(t *testing.T) {
	c := NewCatalog(Limits{Columns: 5})
	c.Activate("")
	d := c.Database("db")
	if dec := d.Admit(line("m", []string{"a"}, []string{"f"})); dec.Line || dec.Fields != 0 {
		t.Fatalf("time, a, f fit in 5: %+v", dec)
	}
	// Three new tags: 3 + 3 > 5.
	if dec := d.Admit(line("m", []string{"b", "c", "e"}, []string{"f"})); !dec.Line || !strings.Contains(dec.Reason, "tag") {
		t.Fatalf("three new tags past 5 columns: %+v", dec)
	}
	// Two more columns still fit: the held line took none.
	l := line("m", []string{"a", "b"}, []string{"f", "g", "h"})
	dec := d.Admit(l)
	if dec.Line || dec.Fields != 1 || !l.Held[2] || l.Held[1] {
		t.Fatalf("b and g fit, h does not: %+v held %v", dec, l.Held)
	}
	if u := d.Usage(); u.WidestColumns != 5 || u.Tables != 1 {
		t.Errorf("usage %+v", u)
	}
	// A line whose every field is new and past the limit is held whole.
	if dec := d.Admit(line("m", nil, []string{"x"})); !dec.Line {
		t.Errorf("only a new field past the limit: %+v", dec)
	}
}

func TestLearnFromRefusals(t *testing.T) {
	c := NewCatalog(Limits{})
	c.Activate("")
	d := c.Database("db")
	for i := 0; i < 3; i++ {
		d.Admit(line(fmt.Sprint("t", i), nil, []string{"f"}))
	}
	e := c.Epoch()
	refused := line("t3", nil, []string{"f"})
	d.Admit(refused)
	if !d.Learn(refused, "Update to schema would exceed number of tables limit: attempted to create table but already have 3 table(s) (limit: 3)") {
		t.Fatal("the tables refusal not read")
	}
	if c.Epoch() == e || c.Limits().Tables != 3 || d.Usage().Tables != 3 {
		t.Errorf("after the tables refusal: epoch %d, limits %+v, %d tables", c.Epoch(), c.Limits(), d.Usage().Tables)
	}
	if dec := d.Admit(line("t3", nil, []string{"f"})); !dec.Line {
		t.Errorf("the refused table again: %+v", dec)
	}
	if dec := d.Admit(line("t0", nil, []string{"f"})); dec.Line {
		t.Errorf("a known table: %+v", dec)
	}
	wide := line("t0", []string{"x"}, []string{"f"})
	d.Learn(wide, "write error: Update to schema would exceed number of columns per table limit of 3 columns")
	if dec := d.Admit(wide); !dec.Line {
		t.Errorf("the refused shape again: %+v", dec)
	}
	if dec := d.Admit(line("t0", nil, []string{"g"})); !dec.Line || !strings.Contains(dec.Reason, "refused one") {
		t.Errorf("a new column of a full table: %+v", dec)
	}
	if d.Learn(nil, "Adding a new database would exceed limit of 5 databases"); !strings.Contains(d.Usage().Refused, "5 databases") {
		t.Errorf("refused database: %+v", d.Usage())
	}
	if dec := d.Admit(line("t0", nil, []string{"f"})); !dec.Line {
		t.Errorf("a refused database's line: %+v", dec)
	}
	if d.Learn(nil, "invalid column type for column 'x'") || IsLimit("field type conflict") {
		t.Error("a type conflict read as a schema limit")
	}
}
