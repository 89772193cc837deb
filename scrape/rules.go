package scrape

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"
	"gopkg.in/yaml.v3"
)

// RelabelRules are relabel_configs as a config file writes them. Each rule
// is read on its own, so a bad one does not hide the others: the good
// ones are in Rules, every bad one in Problems with its line and the rule
// as written.
type RelabelRules struct {
	Rules []*relabel.Config
	// Lines: each rule's line in its file, for traces.
	Lines    []int
	Problems []RuleProblem
}

// RuleProblem is one rule that does not read or validate.
type RuleProblem struct {
	Index, Line int
	Err         error
}

// UnmarshalYAML reads the rules one by one.
func (r *RelabelRules) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return fmt.Errorf("line %d: a list of rules is expected", n.Line)
	}
	for i, item := range n.Content {
		var rc relabel.Config
		err := item.Decode(&rc)
		if err == nil {
			err = rc.Validate(model.UTF8Validation)
		}
		if err != nil {
			r.Problems = append(r.Problems, RuleProblem{Index: i, Line: item.Line, Err: ruleError(item, err)})
			continue
		}
		r.Rules = append(r.Rules, &rc)
		r.Lines = append(r.Lines, item.Line)
	}
	return nil
}

// ruleError says what is wrong with a rule in the words it was written
// in: relabel reports a regex in the anchored form it compiles
// (^(?s:...)$), which the user never wrote.
func ruleError(item *yaml.Node, err error) error {
	for k := 0; k+1 < len(item.Content); k += 2 {
		if item.Content[k].Value != "regex" {
			continue
		}
		written := item.Content[k+1].Value
		if _, rerr := regexp.Compile(written); rerr != nil {
			return fmt.Errorf("regex %q: %w", written, rerr)
		}
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	return fmt.Errorf("%s", msg)
}
