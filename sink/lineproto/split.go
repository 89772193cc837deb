package lineproto

// SplitKey reads a line's key (its measurement and tags, escaped as
// AppendEscaped writes them, without the fields): fn is called with the
// measurement and then with each tag key, in order.
func SplitKey(key []byte, fn func(part []byte, tag bool)) {
	i := 0
	for i < len(key) && key[i] != ',' && key[i] != ' ' {
		if key[i] == '\\' {
			i++
		}
		i++
	}
	fn(key[:min(i, len(key))], false)
	for i < len(key) && key[i] == ',' {
		i++
		start := i
		for i < len(key) && key[i] != '=' {
			if key[i] == '\\' {
				i++
			}
			i++
		}
		fn(key[start:min(i, len(key))], true)
		for i < len(key) && key[i] != ',' && key[i] != ' ' {
			if key[i] == '\\' {
				i++
			}
			i++
		}
	}
}

// FieldKeys calls fn with each field key of a line's fields (the text
// after the key's space, up to the timestamp). Values are numbers, so
// no quoted string can hide a separator.
func FieldKeys(fields []byte, fn func(key []byte)) {
	i := 0
	for i < len(fields) && fields[i] != ' ' {
		start := i
		for i < len(fields) && fields[i] != '=' {
			if fields[i] == '\\' {
				i++
			}
			i++
		}
		fn(fields[start:min(i, len(fields))])
		for i < len(fields) && fields[i] != ',' && fields[i] != ' ' {
			i++
		}
		if i < len(fields) && fields[i] == ',' {
			i++
		}
	}
}

// SplitLine cuts a line into its key and its fields (without the
// timestamp): at the first unescaped space, and the next one.
func SplitLine(line []byte) (key, fields []byte) {
	i := 0
	for i < len(line) && line[i] != ' ' {
		if line[i] == '\\' {
			i++
		}
		i++
	}
	if i >= len(line) {
		return line, nil
	}
	key, rest := line[:i], line[i+1:]
	j := 0
	for j < len(rest) && rest[j] != ' ' {
		if rest[j] == '\\' {
			j++
		}
		j++
	}
	return key, rest[:min(j, len(rest))]
}
