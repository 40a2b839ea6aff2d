"""The DDL preflight parser: which tables a statement touches."""
from __future__ import annotations

import pytest

from mysqlbackup.flashback.ddl import classify, touched_tables


@pytest.mark.parametrize("stmt, kind", [
    ("BEGIN", "transaction"), ("COMMIT", "transaction"), ("XA START 'x'", "transaction"),
    ("/* c */ INSERT INTO t VALUES (1)", "dml"), ("update t set a=1", "dml"), ("DELETE FROM t", "dml"),
    ("ALTER TABLE t ADD c INT", "ddl"), ("TRUNCATE t", "ddl"),
])
def test_classify(stmt, kind):
    assert classify(stmt) == kind


@pytest.mark.parametrize("stmt, schema, tables", [
    ("ALTER TABLE orders ADD COLUMN x INT", "shop", {("shop", "orders")}),
    ("alter online table `shop`.`order items` drop x", None, {("shop", "order items")}),
    ("DROP TABLE IF EXISTS a, shop.b, `c``d`", "db", {("db", "a"), ("shop", "b"), ("db", "c`d")}),
    ("TRUNCATE TABLE t1", "s", {("s", "t1")}),
    ("TRUNCATE t1", "s", {("s", "t1")}),
    ("RENAME TABLE a TO b, c TO d", "s", {("s", "a"), ("s", "b"), ("s", "c"), ("s", "d")}),
    ("CREATE TABLE IF NOT EXISTS `新` (id int)", "s", {("s", "新")}),
    ("CREATE UNIQUE INDEX i ON t (a)", "s", {("s", "t")}),
    ("DROP DATABASE shop", None, {("shop", "*")}),
    ("CREATE OR REPLACE TABLE t2 (a int)", "s", {("s", "t2")}),
    ("GRANT SELECT ON *.* TO x", "s", set()),
    ("CREATE VIEW v AS SELECT 1", "s", set()),
    ("SOMETHING UNREADABLE", "s", {("s", "*")}),
])
def test_touched_tables(stmt, schema, tables):
    assert touched_tables(stmt, schema) == tables
