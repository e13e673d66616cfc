"""A stand-in for the Hugging Face Hub on 127.0.0.1, for tests: the HTTP endpoints huggingface_hub calls.

Why a hand-written server: the tests run without a network, huggingface_hub's own tests talk to a live
staging Hub (hub-ci.huggingface.co), and no maintained package offers a local Hub for tests. So this
serves just what ``hf_hub_download``, ``HfApi.create_repo`` and ``HfApi.upload_folder`` use, the way the
Hub answers them (point ``HF_ENDPOINT`` at ``FakeHub.url``):

- ``HEAD``/``GET /{repo}/resolve/{revision}/{path}``: the file, with ``ETag``, ``X-Repo-Commit`` and
  ``Content-Length``; a 404 with the Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
  ``EntryNotFound``) otherwise, which huggingface_hub turns into its typed errors;
- ``GET /api/agent-harnesses`` (an empty registry: huggingface_hub 2 asks for it once a day);
- ``POST /api/validate-yaml`` (upload_folder has a README's front matter checked: here, that it is YAML);
- ``POST /api/repos/create``; ``POST /api/models/{repo}/preupload/{revision}`` (every file "regular":
  sent inline in the commit, as the Hub does for small files, so no LFS transfer is needed);
  ``POST /api/models/{repo}/commit/{revision}`` (the NDJSON commit with base64 files); each needs a
  token (``Authorization: Bearer ...``), any token.

It also answers requests sent to it as an HTTP proxy (``GET http://host/path``), so a test can check
that proxy settings are honoured. It listens on the loopback interface only. Requests it does not know
are answered 501 and recorded in ``unknown``, so a test can fail loudly on them.
"""
import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml


class FakeHub:
    """Model repos in memory, served on ``127.0.0.1:<free port>`` from a background thread."""

    def __init__(self) -> None:
        # repo id -> its commits, oldest first: (commit sha, {path: bytes})
        self.repos: dict[str, list[tuple[str, dict[str, bytes]]]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, in order
        self.unknown: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(('127.0.0.1', 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f'http://127.0.0.1:{self._server.server_address[1]}'
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> 'FakeHub':
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_commit(self, repo_id: str, files: dict[str, bytes]) -> str:
        """A new commit on ``main`` of ``repo_id`` (created if needed) adding ``files``; returns its sha."""
        with self._lock:
            history = self.repos.setdefault(repo_id, [])
            tree = dict(history[-1][1]) if history else {}
            tree.update(files)
            sha = hashlib.sha1(repr((repo_id, len(history), sorted(tree))).encode()).hexdigest()
            history.append((sha, tree))
            return sha

    def file(self, repo_id: str, path: str, revision: str = 'main') -> tuple[int, str, str | None, bytes]:
        """(status, X-Error-Code, commit sha, body) for a resolve request."""
        with self._lock:
            history = self.repos.get(repo_id)
            if not history:
                return 404, 'RepoNotFound', None, b'Repository not found'
            found = [c for c in history if c[0] == revision] if revision != 'main' else history[-1:]
            if not found:
                return 404, 'RevisionNotFound', None, b'Invalid rev id'
            sha, tree = found[-1]
            if path not in tree:
                return 404, 'EntryNotFound', sha, b'Entry not found'
            return 200, '', sha, tree[path]


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

        def _path(self) -> str:
            # A request through a proxy carries the absolute URL: keep only its path.
            return unquote(urlsplit(self.path).path)

        def _answer(self, status: int, body: bytes = b'', headers: dict[str, str] | None = None,
                    send_body: bool = True) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def _json(self, status: int, value) -> None:
            self._answer(status, json.dumps(value).encode(), {'Content-Type': 'application/json'})

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get('Content-Length') or 0))

        def _resolve(self, send_body: bool) -> None:
            path = self._path()
            hub.requests.append((self.command, path))
            head, sep, tail = path.lstrip('/').partition('/resolve/')
            if not sep:
                return self._unknown()
            revision, _, filename = tail.partition('/')
            status, error, sha, body = hub.file(head, filename, revision)
            headers = {'X-Error-Code': error} if error else {'ETag': f'"{hashlib.sha256(body).hexdigest()}"'}
            if sha:
                headers['X-Repo-Commit'] = sha
            self._answer(status, body, headers, send_body)

        def do_HEAD(self) -> None:
            self._resolve(send_body=False)

        def do_GET(self) -> None:
            if self._path() == '/api/agent-harnesses':  # huggingface_hub >= 2 reads it for its user agent
                hub.requests.append(('GET', self._path()))
                return self._json(200, {'standardEnvVars': [], 'harnesses': {}})
            self._resolve(send_body=True)

        def do_POST(self) -> None:
            path = self._path()
            hub.requests.append(('POST', path))
            body = self._body()
            if path == '/api/validate-yaml':
                return self._validate_yaml(json.loads(body)['content'])
            if not self.headers.get('Authorization', '').startswith('Bearer '):  # writes need a token, as on the Hub
                return self._answer(401, b'Invalid username or password.')
            if path == '/api/repos/create':
                request = json.loads(body)
                repo_id = f"{request['organization']}/{request['name']}" if request.get('organization') \
                    else request['name']
                if repo_id in hub.repos:
                    return self._json(409, {'error': 'You already created this model repo',
                                            'url': f'{hub.url}/{repo_id}'})
                with hub._lock:
                    hub.repos[repo_id] = []
                return self._json(200, {'url': f'{hub.url}/{repo_id}'})
            if path.startswith('/api/models/') and '/preupload/' in path:
                files = json.loads(body)['files']
                return self._json(200, {'files': [
                    {'path': f['path'], 'uploadMode': 'regular', 'shouldIgnore': False} for f in files]})
            if path.startswith('/api/models/') and '/commit/' in path:
                repo_id = path[len('/api/models/'):].split('/commit/')[0]
                if repo_id not in hub.repos:
                    return self._answer(404, b'Repository not found', {'X-Error-Code': 'RepoNotFound'})
                files = {}
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item['key'] == 'file':
                        files[item['value']['path']] = base64.b64decode(item['value']['content'])
                    elif item['key'] != 'header':
                        return self._unknown(f"commit entry {item['key']!r}")
                sha = hub.add_commit(repo_id, files)
                return self._json(200, {'success': True, 'commitOid': sha,
                                        'commitUrl': f'{hub.url}/{repo_id}/commit/{sha}'})
            self._unknown()

        def _validate_yaml(self, readme: str) -> None:
            """The README's front matter must be a YAML mapping (the Hub also checks the values of its fields)."""
            front, sep, _ = readme.removeprefix('---\n').partition('\n---\n')
            try:
                metadata = yaml.safe_load(front) if readme.startswith('---\n') and sep else {}
            except yaml.YAMLError as e:
                metadata = f'not YAML: {e}'
            if not isinstance(metadata, dict):
                return self._json(400, {'errors': [{'message': f'front matter: expected a mapping, got {metadata!r}'}]})
            self._json(200, {'errors': [], 'warnings': [] if metadata else [{'message': 'empty metadata'}]})

        def _unknown(self, what: str = '') -> None:
            hub.unknown.append((self.command, self.path + (f' ({what})' if what else '')))
            self._answer(501, b'not served by the fake Hub')

    return Handler
