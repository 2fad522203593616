package server

import (
	"errors"
	"strings"
	"testing"

	"github.com/wagg/wagg/host/api"
)

// checkSQL lets through the statements a reader runs, nested as deep as
// dashboards nest them, and refuses the rest before ClickHouse sees it.
func TestCheckSQL(t *testing.T) {
	deep := func(open, mid, close string, n int) string {
		return "SELECT " + strings.Repeat(open, n) + mid + strings.Repeat(close, n)
	}
	for _, ok := range []string{
		"SELECT 1",
		"  select 1",
		"-- the votes\nSELECT 1",
		"/* (((( */ SELECT 1",
		"(SELECT 1) UNION ALL (SELECT 2)",
		"WITH 1 AS x SELECT x",
		"SHOW TABLES",
		"DESCRIBE TABLE system.one",
		"desc system.one",
		"EXISTS TABLE system.one",
		deep("(", "1", ")", maxSQLBrackets),
		deep("CASE WHEN 1 THEN ", "1", " END", maxSQLCases),
		"SELECT visitParamExtractString(s, 'a') FROM t",
		"SELECT '((((((((' , \"a(\", `b[` FROM t WHERE s = 'it''s (' OR s = 'back\\\\' OR s = '\\'('",
		"SELECT end, end, count() FROM t GROUP BY end",
		"SELECT visitParamExtractRawX FROM t",
	} {
		if err := checkSQL(ok); err != nil {
			t.Errorf("%.60q: %v", ok, err)
		}
	}
	for _, bad := range []struct{ sql, msg string }{
		{"", "empty"},
		{"  -- nothing\n", "empty"},
		{"KILL QUERY WHERE 1", `not "KILL"`},
		{"USE system", `not "USE"`},
		{"/* SELECT */ DROP TABLE t", `not "DROP"`},
		{"'SELECT'", "not \"a literal\""},
		{"((KILL QUERY WHERE 1))", `not "KILL"`},
		{deep("(", "1", ")", maxSQLBrackets+1), "129 deep"},
		{deep("[", "1", "]", 1000), "1000 deep"},
		{deep("abs(", "1", ")", 1500), "1500 deep"},
		{deep("CASE WHEN 1 THEN ", "1", " END", 1500), "1500 CASE"},
		{"SELECT * FROM " + strings.Repeat("(SELECT * FROM ", 5000) + "system.one" + strings.Repeat(")", 5000), "5000 deep"},
		// stray closers do not make room for more openers
		{"SELECT " + strings.Repeat(")", 1000) + deep("(", "1", ")", 1000)[len("SELECT "):], "1000 deep"},
		// nor does a column named end close a CASE
		{deep("CASE end WHEN ", "0", " THEN 1 END", 300), "300 CASE"},
		{"SELECT " + strings.Repeat("CASE WHEN 1 THEN 1 END + ", 300) + "1", "300 CASE"},
		{`SELECT visitParamExtractRaw('{"a":', 'a')`, "crashes ClickHouse"},
		{`SELECT VISITPARAMEXTRACTRAW(s, 'a') FROM t`, "crashes ClickHouse"},
		// an unclosed comment or literal hides nothing it could not
		{"SELECT 1 /* " + strings.Repeat("(", 1000), ""},
		{"SELECT " + strings.Repeat("(", 1000) + "'", "1000 deep"},
	} {
		err := checkSQL(bad.sql)
		if bad.msg == "" {
			if err != nil {
				t.Errorf("%.60q: %v", bad.sql, err)
			}
			continue
		}
		if !errors.Is(err, api.ErrInvalidQuery) || !strings.Contains(err.Error(), bad.msg) {
			t.Errorf("%.60q: %v, want invalid query with %q", bad.sql, err, bad.msg)
		}
	}
}

// FuzzCheckSQL: any text gets an answer, and a query it lets through
// nests brackets no deeper than maxSQLBrackets however it is read: counting every
// bracket, in literals and comments too, bounds what ClickHouse sees.
func FuzzCheckSQL(f *testing.F) {
	for _, s := range []string{"SELECT 1", "SELECT ((1))", "SELECT '(' -- (\n", "SELECT CASE WHEN 1 THEN 2 END", "/* */ SHOW TABLES"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		if checkSQL(sql) != nil {
			return
		}
		depth := 0
		for i := 0; i < len(sql); i++ {
			switch sql[i] {
			case '(', '[', '{':
				depth++
			case ')', ']', '}':
				depth = max(depth-1, 0)
			}
			if depth > maxSQLBrackets && !strings.ContainsAny(sql, "'\"`-/") {
				t.Fatalf("let through %d brackets deep: %.80q", depth, sql)
			}
		}
	})
}
