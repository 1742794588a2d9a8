-- The knowledge base: a tenant's articles of frequent questions, written
-- by supervisors and admins, read by every member (drafts included) and,
-- once published, by anyone at /kb/{tenant}/articles.  Each article is
-- indexed for full-text search in its own language; an article not
-- confirmed for review_after_days (kb_settings) is due for review.
-- Not here: the HTTP side (server/api/kb.c) and ticket-side suggestions.

-- ======================== text search ========================

-- The PostgreSQL text search configuration for a language tag ("en",
-- "pt-BR", "nb"): its primary subtag decides, anything unknown is 'simple'.
-- IMMUTABLE (the generated column below needs it): the names are
-- schema-qualified, so search_path cannot change the answer, and each is
-- cast on its own so that the casts fold to constants when this is inlined.
CREATE FUNCTION sb_kb_ts_config(p_language text) RETURNS regconfig
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE lower(split_part(p_language, '-', 1))
        WHEN 'en' THEN 'pg_catalog.english'::regconfig
        WHEN 'ru' THEN 'pg_catalog.russian'::regconfig
        WHEN 'ar' THEN 'pg_catalog.arabic'::regconfig
        WHEN 'de' THEN 'pg_catalog.german'::regconfig
        WHEN 'fr' THEN 'pg_catalog.french'::regconfig
        WHEN 'es' THEN 'pg_catalog.spanish'::regconfig
        WHEN 'pt' THEN 'pg_catalog.portuguese'::regconfig
        WHEN 'it' THEN 'pg_catalog.italian'::regconfig
        WHEN 'nl' THEN 'pg_catalog.dutch'::regconfig
        WHEN 'sv' THEN 'pg_catalog.swedish'::regconfig
        WHEN 'fi' THEN 'pg_catalog.finnish'::regconfig
        WHEN 'da' THEN 'pg_catalog.danish'::regconfig
        WHEN 'no' THEN 'pg_catalog.norwegian'::regconfig
        WHEN 'nb' THEN 'pg_catalog.norwegian'::regconfig
        WHEN 'hu' THEN 'pg_catalog.hungarian'::regconfig
        WHEN 'ro' THEN 'pg_catalog.romanian'::regconfig
        WHEN 'tr' THEN 'pg_catalog.turkish'::regconfig
        WHEN 'el' THEN 'pg_catalog.greek'::regconfig
        WHEN 'id' THEN 'pg_catalog.indonesian'::regconfig
        WHEN 'lt' THEN 'pg_catalog.lithuanian'::regconfig
        WHEN 'hi' THEN 'pg_catalog.hindi'::regconfig
        WHEN 'ta' THEN 'pg_catalog.tamil'::regconfig
        WHEN 'ne' THEN 'pg_catalog.nepali'::regconfig
        WHEN 'ga' THEN 'pg_catalog.irish'::regconfig
        WHEN 'hy' THEN 'pg_catalog.armenian'::regconfig
        WHEN 'eu' THEN 'pg_catalog.basque'::regconfig
        WHEN 'ca' THEN 'pg_catalog.catalan'::regconfig
        WHEN 'sr' THEN 'pg_catalog.serbian'::regconfig
        WHEN 'yi' THEN 'pg_catalog.yiddish'::regconfig
        ELSE 'pg_catalog.simple'::regconfig END
    $$;

-- Text as the search sees it: lower-cased by Unicode rules.  The text
-- search dictionaries fold case by the database's LC_CTYPE, and under the
-- C locale that leaves "Счёт" and "счёт" apart; an ICU collation (when the
-- server has ICU) folds every script the same on any cluster.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_collation WHERE collname = 'und-x-icu') THEN
        CREATE FUNCTION sb_kb_fold(p text) RETURNS text
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
            AS 'SELECT lower(p COLLATE "und-x-icu")';
    ELSE
        CREATE FUNCTION sb_kb_fold(p text) RETURNS text
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
            AS 'SELECT lower(p)';
    END IF;
END
$$;

-- ======================== articles ========================

-- An article's search vector: the title (weight A) and the body (weight B)
-- in the article's language.  Words over 2047 characters (a data: URL in
-- the Markdown) are left out with a NOTICE, which is not news to anyone:
-- hence the SET (the server's connections print notices to its log).
CREATE FUNCTION sb_kb_vector(p_language text, p_title text, p_body text) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET client_min_messages = warning
    AS $$
    SELECT setweight(to_tsvector(sb_kb_ts_config(p_language), sb_kb_fold(p_title)), 'A')
        || setweight(to_tsvector(sb_kb_ts_config(p_language), sb_kb_fold(p_body)), 'B')
    $$;

CREATE TABLE kb_articles (
    tenant_id       bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    title           text NOT NULL CHECK (length(title) BETWEEN 1 AND 300 AND btrim(title) <> ''),
    body            text NOT NULL DEFAULT '' CHECK (length(body) <= 200000),
    language        text NOT NULL
                    CHECK (length(language) <= 35
                           AND language ~ '^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$'),
    tags            text[] NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 50),
    status          text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'published')),
    author_agent_id bigint REFERENCES agents ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    reviewed_at     timestamptz NOT NULL DEFAULT now(),   -- last confirmed still right
    views           bigint NOT NULL DEFAULT 0,
    helpful         integer NOT NULL DEFAULT 0,
    not_helpful     integer NOT NULL DEFAULT 0,
    -- Recomputed only when title, body or language change (not on the
    -- counters' updates, which stay HOT).
    search          tsvector GENERATED ALWAYS AS (sb_kb_vector(language, title, body)) STORED,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX kb_articles_search ON kb_articles USING gin (search);
CREATE INDEX kb_articles_list ON kb_articles (tenant_id, updated_at DESC, id DESC);
-- The languages in use, for building a query under each of their configurations.
CREATE INDEX kb_articles_language ON kb_articles (tenant_id, status, language);

CREATE TABLE kb_settings (
    tenant_id          bigint PRIMARY KEY REFERENCES tenants ON DELETE CASCADE,
    review_after_days  integer NOT NULL DEFAULT 180 CHECK (review_after_days BETWEEN 1 AND 3650)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['kb_articles', 'kb_settings']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = sb_tenant())'
                       ' WITH CHECK (tenant_id = sb_tenant())', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO switchboard_app', t);
    END LOOP;
END
$$;

-- Tags from a JSON array of strings, each once, in their first order;
-- NULL for NULL.
CREATE FUNCTION sb_kb_tags(p jsonb) RETURNS text[]
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE WHEN p IS NOT NULL THEN
        ARRAY(SELECT x.t FROM jsonb_array_elements_text(p) WITH ORDINALITY x(t, i)
              GROUP BY x.t ORDER BY min(x.i)) END
    $$;

-- ======================== search ========================

-- What a reader typed, read as a web search ("quoted phrase", or, -not)
-- in one language's configuration.
CREATE FUNCTION sb_kb_query(p_config regconfig, p_text text) RETURNS tsquery
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT websearch_to_tsquery(p_config, sb_kb_fold(p_text)) $$;

CREATE AGGREGATE sb_kb_tsquery_or(tsquery) (SFUNC = tsquery_or, STYPE = tsquery);

-- The text read under each configuration the tenant's articles use
-- (published ones only unless p_drafts) and under 'simple', ORed: every
-- article that matches in its own language matches this, so it finds the
-- candidates through the GIN index whatever their languages.  Empty
-- (matching nothing) when every word is a stop word.
CREATE FUNCTION sb_kb_tsquery(p_text text, p_drafts boolean) RETURNS tsquery
    LANGUAGE sql STABLE
    SET client_min_messages = warning   -- "only stop words" notices are expected
    AS $$
    SELECT coalesce(sb_kb_tsquery_or(q ORDER BY q), ''::tsquery)
    FROM (SELECT DISTINCT sb_kb_query(cfg, p_text) AS q
          FROM (SELECT sb_kb_ts_config(l.language) AS cfg
                FROM (SELECT DISTINCT a.language FROM kb_articles a
                      WHERE a.tenant_id = sb_tenant()
                        AND (p_drafts OR a.status = 'published')) l
                UNION SELECT 'pg_catalog.simple'::regconfig) c) x
    WHERE numnode(q) > 0
    $$;

-- The tenant's articles that match what a reader typed, with their rank.
-- The ORed query (computed once: a parameter of the index scan) selects
-- candidates; each is then checked and ranked against the text read in
-- its own language only, so another language's reading of the words
-- (say, an unstemmed "-word" under 'simple') cannot change the answer.
--
-- Row-level security would keep "search @@ query" off the GIN index (the
-- operator is not leakproof, so the planner may not evaluate it before
-- the policy): this runs as the tables' owner and applies the same tenant
-- condition itself.  Callers join the ids back to kb_articles, under RLS.
CREATE FUNCTION sb_kb_search(p_text text, p_drafts boolean)
    RETURNS TABLE (id bigint, rank real)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = public, pg_temp
    SET client_min_messages = warning
    AS $$
    SELECT a.id, ts_rank(a.search, own.q) FROM kb_articles a,
           LATERAL (SELECT sb_kb_query(sb_kb_ts_config(a.language), p_text) AS q) own
    WHERE a.tenant_id = sb_tenant() AND (p_drafts OR a.status = 'published')
      AND a.search @@ (SELECT sb_kb_tsquery(p_text, p_drafts))
      AND a.search @@ own.q
    $$;
REVOKE ALL ON FUNCTION sb_kb_search(text, boolean) FROM PUBLIC;

-- A search hit's excerpt: the body around the matches, which are marked
-- **like this** (the body is Markdown; nothing is HTML-escaped here).
CREATE FUNCTION sb_kb_snippet(p_language text, p_body text, p_text text) RETURNS text
    LANGUAGE sql STABLE
    SET client_min_messages = warning
    AS $$
    SELECT ts_headline(sb_kb_ts_config(p_language), p_body,
                       sb_kb_query(sb_kb_ts_config(p_language), p_text),
                       'StartSel=**, StopSel=**, MaxWords=35, MinWords=12, MaxFragments=2,'
                       ' FragmentDelimiter=" … "')
    $$;

-- ======================== JSON shapes ========================

CREATE FUNCTION sb_kb_review_days() RETURNS integer
    LANGUAGE sql STABLE
    AS $$ SELECT coalesce((SELECT review_after_days FROM kb_settings
                           WHERE tenant_id = sb_tenant()), 180) $$;

-- Due for review: neither confirmed nor edited for review_after_days.
CREATE FUNCTION sb_kb_needs_review(p_reviewed timestamptz, p_updated timestamptz) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$ SELECT greatest(p_reviewed, p_updated) < now() - make_interval(days => sb_kb_review_days()) $$;

-- The public address of an article: what an agent puts in a reply.
CREATE FUNCTION sb_kb_url(p_tenant bigint, p_id bigint) RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT '/kb/' || t.slug || '/articles/' || p_id FROM tenants t WHERE t.id = p_tenant $$;

-- An article as members see it.
CREATE FUNCTION sb_kb_article_json(a kb_articles) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object(
        'id', a.id, 'title', a.title, 'body', a.body, 'language', a.language,
        'tags', to_jsonb(a.tags), 'status', a.status,
        'author', sb_agent_json(a.tenant_id, a.author_agent_id),
        'created_at', a.created_at, 'updated_at', a.updated_at, 'reviewed_at', a.reviewed_at,
        'needs_review', sb_kb_needs_review(a.reviewed_at, a.updated_at),
        'views', a.views, 'helpful', a.helpful, 'not_helpful', a.not_helpful,
        'url', sb_kb_url(a.tenant_id, a.id))
    $$;

-- A published article as anyone sees it: no author, status or counters.
CREATE FUNCTION sb_kb_public_json(a kb_articles) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object(
        'id', a.id, 'title', a.title, 'body', a.body, 'language', a.language,
        'tags', to_jsonb(a.tags), 'created_at', a.created_at, 'updated_at', a.updated_at,
        'url', sb_kb_url(a.tenant_id, a.id))
    $$;

GRANT EXECUTE ON FUNCTION sb_kb_ts_config(text), sb_kb_fold(text), sb_kb_tags(jsonb),
    sb_kb_vector(text, text, text),
    sb_kb_query(regconfig, text), sb_kb_tsquery_or(tsquery), sb_kb_tsquery(text, boolean),
    sb_kb_search(text, boolean), sb_kb_snippet(text, text, text), sb_kb_review_days(),
    sb_kb_needs_review(timestamptz, timestamptz), sb_kb_url(bigint, bigint),
    sb_kb_article_json(kb_articles), sb_kb_public_json(kb_articles)
    TO switchboard_app;
