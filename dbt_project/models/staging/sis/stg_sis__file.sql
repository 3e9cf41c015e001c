with

source as (

    select * from {{ source('sis', 'file') }}

),

final as (

    select
        run_id,
        school_id,
        file_key,
        file_version_id,
        file_etag,
        file_sha256,
        file_bytes,
        file_encoding,
        rows_in_file

    from source

)

select * from final
