"""Top floor: the pages that combine floors for people: the home page, the image page and the consensus page with
the model's opinion. Nothing imports it but config/urls.py."""
