#!/usr/bin/env python3
"""BM25 oracle: score report texts with tantivy-py, apart from medlake's index code.

Usage: python3 tests/oracle/bm25_tantivy.py < request.json > scores.json

The request is {"docs": [{"id": ..., "text": ...}, ...], "queries": [...]}. The texts go
into a fresh in-RAM tantivy-py index (field "text" with the "en_stem" analyzer: simple
tokenizer, tokens over 40 bytes dropped, lower-cased, English Snowball stemmer; field
"id" raw and stored), in one commit. Each query is parsed with tantivy's query parser
over "text" and every matching document is scored (BM25, k1 1.2, b 0.75).

The answer is {query: {id: score}} with every matching document.
"""
import json
import sys

import tantivy


def main():
    req = json.load(sys.stdin)
    sb = tantivy.SchemaBuilder()
    sb.add_text_field("id", stored=True, tokenizer_name="raw")
    sb.add_text_field("text", stored=False, tokenizer_name="en_stem")
    schema = sb.build()
    index = tantivy.Index(schema)
    w = index.writer(heap_size=100_000_000, num_threads=1)
    for d in req["docs"]:
        w.add_document(tantivy.Document(id=d["id"], text=d["text"]))
    w.commit()
    w.wait_merging_threads()
    index.reload()
    searcher = index.searcher()
    n = max(1, len(req["docs"]))
    out = {}
    for q in req["queries"]:
        query = index.parse_query(q, ["text"])
        hits = searcher.search(query, limit=n).hits
        out[q] = {searcher.doc(addr)["id"][0]: score for score, addr in hits}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
