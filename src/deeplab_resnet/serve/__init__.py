"""``deeplab serve``: a local web page and JSON API for segmenting photos (needs the ``serve`` extra).

:func:`~.app.create_app` builds the FastAPI application from a segmenter; :mod:`.batching` shares
the network between requests; :mod:`.server` runs it with uvicorn. Import the submodules: this
package itself imports nothing, so that it can be found without FastAPI installed.
"""
