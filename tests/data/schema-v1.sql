-- The metadata schema (version 1) of vlmsearch 0.1.0 at commit 10318b0, dumped from an index it
-- made (sqlite_master). Migration tests build a version-1 index from it.
CREATE TABLE meta (
	"key" VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY ("key")
);
CREATE TABLE files (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	path BLOB NOT NULL, 
	size BIGINT NOT NULL, 
	mtime_ns BIGINT NOT NULL, 
	digest VARCHAR(64), 
	width INTEGER, 
	height INTEGER, 
	status VARCHAR(8) NOT NULL, 
	error TEXT, 
	seq BIGINT NOT NULL, 
	indexed_at FLOAT NOT NULL, 
	UNIQUE (path)
);
CREATE INDEX ix_files_digest ON files (digest);
CREATE INDEX ix_files_seq ON files (seq);
CREATE TABLE vectors (
	digest VARCHAR(64) NOT NULL, 
	vec BLOB NOT NULL, 
	PRIMARY KEY (digest)
);
CREATE TABLE texts (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	digest VARCHAR(64) NOT NULL, 
	text TEXT NOT NULL, 
	source TEXT, 
	vec BLOB NOT NULL, 
	seq BIGINT NOT NULL, 
	UNIQUE (digest)
);
CREATE INDEX ix_texts_seq ON texts (seq);
CREATE TABLE tombstones (
	rowid INTEGER NOT NULL, 
	kind VARCHAR(8) NOT NULL, 
	item_id BIGINT NOT NULL, 
	seq BIGINT NOT NULL, 
	PRIMARY KEY (rowid)
);
CREATE INDEX ix_tombstones_seq ON tombstones (seq);
