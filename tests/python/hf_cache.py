"""Python's huggingface_hub on the Hugging Face cache, for tests/hub.test.ts.

  hf_cache.py download <repo_id> [allow_pattern ...]   snapshot_download into HF_HUB_CACHE from HF_ENDPOINT; prints the path
  hf_cache.py scan                                     scan_cache_dir() of HF_HUB_CACHE as JSON
"""
import json
import sys

from huggingface_hub import scan_cache_dir, snapshot_download


def main() -> None:
    command = sys.argv[1]
    if command == "download":
        path = snapshot_download(repo_id=sys.argv[2], allow_patterns=sys.argv[3:] or None)
        print(path)
    elif command == "scan":
        info = scan_cache_dir()
        print(json.dumps({
            "warnings": [str(w) for w in info.warnings],
            "repos": [
                {
                    "repo_id": repo.repo_id,
                    "repo_type": repo.repo_type,
                    "size_on_disk": repo.size_on_disk,
                    "nb_files": repo.nb_files,
                    "refs": sorted(repo.refs),
                    "revisions": [
                        {
                            "commit_hash": rev.commit_hash,
                            "refs": sorted(rev.refs),
                            "files": sorted(f.file_name for f in rev.files),
                            "blobs": sorted(f.blob_path.name for f in rev.files),
                        }
                        for rev in repo.revisions
                    ],
                }
                for repo in info.repos
            ],
        }))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
